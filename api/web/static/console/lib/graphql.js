// GraphQL over HTTP (queries, mutations) and over a websocket (subscriptions, graphql-ws).
import { createClient } from "graphql-ws";
import { authHeaders } from "./session.js";

let credential = null;
let wsClient = null;
const statusListeners = new Set();
let wsStatus = "idle";
let active = 0; // open subscriptions: a socket closed with none open is idle, not lost

/** Use these credentials for every call from now on (null: signed out). */
export function setCredential(value) {
  credential = value;
  if (wsClient) {
    wsClient.dispose();
    wsClient = null;
  }
  setStatus("idle");
}

export class GraphQLFailure extends Error {
  constructor(message, code) {
    super(message);
    this.code = code || "ERROR";
  }
}

const onUnauthenticated = new Set();
/** Call `fn(message)` when the server says the credentials no longer work. */
export function whenUnauthenticated(fn) {
  onUnauthenticated.add(fn);
  return () => onUnauthenticated.delete(fn);
}

function failure(errors) {
  const first = errors[0] || {};
  const code = (first.extensions && first.extensions.code) || "ERROR";
  if (code === "UNAUTHENTICATED") onUnauthenticated.forEach((fn) => fn(first.message));
  return new GraphQLFailure(first.message || "request failed", code);
}

/** Run a query or mutation; resolves to `data`, rejects with a GraphQLFailure. */
export async function gql(query, variables = {}, explicitCredential) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        ...authHeaders(explicitCredential === undefined ? credential : explicitCredential),
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    throw new GraphQLFailure("The server cannot be reached: " + e.message, "NETWORK");
  }
  let body;
  try {
    body = await response.json();
  } catch (e) {
    throw new GraphQLFailure(`The server answered ${response.status} without JSON`, "HTTP");
  }
  if (response.status === 429) throw new GraphQLFailure(body.detail || "rate limited", "RATE_LIMITED");
  if (body.errors && body.errors.length) throw failure(body.errors);
  return body.data;
}

/** An authenticated fetch of a REST route (the import and the interval export). */
export async function rest(path, init = {}) {
  const response = await fetch(path, {
    ...init,
    headers: { Accept: "application/json", ...(init.headers || {}), ...authHeaders(credential) },
  });
  if (response.status === 401) onUnauthenticated.forEach((fn) => fn("credentials refused"));
  return response;
}

function setStatus(value) {
  wsStatus = value;
  statusListeners.forEach((fn) => fn(value));
}

/** Follow the websocket's state: idle, connecting, live, closed. */
export function onLiveStatus(fn) {
  statusListeners.add(fn);
  fn(wsStatus);
  return () => statusListeners.delete(fn);
}

function client() {
  if (wsClient) return wsClient;
  const url = new URL("/graphql", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  wsClient = createClient({
    url: url.toString(),
    connectionParams: () => authHeaders(credential),
    lazy: true,
    keepAlive: 20000,
    retryAttempts: Infinity,
    shouldRetry: (event) => !(event && (event.code === 4401 || event.code === 4403)),
    retryWait: (retries) => new Promise((r) => setTimeout(r, Math.min(15000, 1000 * 2 ** retries))),
    on: {
      connecting: () => setStatus("connecting"),
      connected: () => setStatus("live"),
      closed: (event) => {
        setStatus(active > 0 ? "closed" : "idle");
        if (event && event.code === 4401) onUnauthenticated.forEach((fn) => fn("credentials refused"));
      },
    },
  });
  return wsClient;
}

/**
 * Subscribe; `onData(data)` per event, `onError(GraphQLFailure)` when it fails.
 * Returns the function that ends the subscription.
 */
export function subscribe(query, variables, onData, onError) {
  active += 1;
  let ended = false;
  const end = () => {
    if (!ended) {
      ended = true;
      active -= 1;
    }
  };
  const dispose = client().subscribe(
    { query, variables },
    {
      next: (result) => {
        if (result.errors && result.errors.length) onError(failure(result.errors));
        else onData(result.data);
      },
      error: (err) => {
        end();
        if (Array.isArray(err)) onError(failure(err));
        else onError(new GraphQLFailure(err && err.reason ? err.reason : "live updates stopped", "LIVE"));
      },
      complete: end,
    },
  );
  return () => {
    end();
    dispose();
  };
}
