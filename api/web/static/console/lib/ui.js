// Shared pieces of every page: data hooks, loading/empty/error states, dialogs, badges.
import { html, useState, useEffect, useRef, useCallback } from "./html.js";
import { gql, subscribe } from "./graphql.js";

/** Run a query when `deps` change: { data, error, loading, reload, setData }. */
export function useQuery(query, variables, deps = [], { skip = false } = {}) {
  const [state, setState] = useState({ data: null, error: null, loading: !skip });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (skip) {
      setState({ data: null, error: null, loading: false });
      return undefined;
    }
    let live = true;
    setState((s) => ({ ...s, loading: true, error: null }));
    gql(query, variables).then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState({ data: null, error, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick, skip]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const setData = useCallback((fn) => setState((s) => ({ ...s, data: fn(s.data) })), []);
  return { ...state, reload, setData };
}

/** Keep a subscription open while `deps` hold; `onData` gets every event. */
export function useSubscription(query, variables, onData, deps = [], { skip = false } = {}) {
  const [error, setError] = useState(null);
  const handler = useRef(onData);
  handler.current = onData;
  useEffect(() => {
    if (skip) return undefined;
    setError(null);
    return subscribe(query, variables, (data) => handler.current(data), setError);
  }, [...deps, skip]);
  return error;
}

export function Loading({ what = "Loading" }) {
  return html`<p class="state loading" role="status" aria-live="polite"><span class="spinner" aria-hidden="true"></span>${what}…</p>`;
}

export function ErrorBox({ error, retry }) {
  if (!error) return null;
  const message = error.message || String(error);
  return html`<div class="state error" role="alert">
    <strong>${error.code === "FORBIDDEN" ? "Not allowed" : "Something went wrong"}:</strong> ${message}
    ${retry && html` <button type="button" class="link" onClick=${retry}>Try again</button>`}
  </div>`;
}

export function Empty({ children }) {
  return html`<p class="state empty">${children}</p>`;
}

/** Loading, error or the content, in that order. */
export function Loaded({ result, what, children }) {
  if (result.error) return html`<${ErrorBox} error=${result.error} retry=${result.reload} />`;
  if (result.loading && !result.data) return html`<${Loading} what=${what} />`;
  if (!result.data) return null;
  return children(result.data);
}

export function Card({ title, children, actions, id, className = "" }) {
  const headingId = id ? `${id}-title` : undefined;
  return html`<section class=${`card ${className}`} id=${id} aria-labelledby=${headingId}>
    ${(title || actions) &&
    html`<header class="card-head">
      ${title && html`<h2 id=${headingId}>${title}</h2>`}
      ${actions && html`<div class="actions">${actions}</div>`}
    </header>`}
    ${children}
  </section>`;
}

export function Stat({ label, children, tone = "", hint }) {
  return html`<div class=${`stat ${tone}`}>
    <div class="stat-label">${label}</div>
    <div class="stat-value">${children}</div>
    ${hint && html`<div class="stat-hint">${hint}</div>`}
  </div>`;
}

const TONES = {
  COMMISSIONED: "ok",
  REGISTERED: "info",
  DECOMMISSIONED: "muted",
  OPEN: "bad",
  ACKNOWLEDGED: "warn",
  RESOLVED: "ok",
  CRITICAL: "bad",
  HIGH: "bad",
  MEDIUM: "warn",
  LOW: "info",
  CONFIRMED: "ok",
  FAILED: "bad",
  REQUESTED: "info",
  SENT: "warn",
  online: "ok",
  offline: "bad",
  never: "muted",
};

export function Badge({ value, text }) {
  const key = String(value);
  return html`<span class=${`badge ${TONES[key] || "info"}`}>${text || key.replace(/_/g, " ").toLowerCase()}</span>`;
}

export function Reach({ meter }) {
  if (!meter.lastSeen) return html`<${Badge} value="never" text="never seen" />`;
  return meter.online ? html`<${Badge} value="online" />` : html`<${Badge} value="offline" />`;
}

/**
 * A modal dialog (the platform's <dialog>: focus moves in, Escape closes, focus returns).
 * `onClose` runs however it closes.
 */
export function Dialog({ title, open, onClose, children, id = "dialog" }) {
  const ref = useRef(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    if (open && !el.open) el.showModal();
    if (!open && el.open) el.close();
  }, [open]);
  return html`<dialog ref=${ref} class="dialog" aria-labelledby=${`${id}-title`} onClose=${onClose}>
    ${open &&
    html`<div class="dialog-body">
      <h2 id=${`${id}-title`}>${title}</h2>
      ${children}
    </div>`}
  </dialog>`;
}

/** "Are you sure?" for commands that act on the grid; confirm runs `onConfirm`. */
export function ConfirmDialog({ open, title, body, confirmLabel, danger, onConfirm, onCancel, busy }) {
  return html`<${Dialog} open=${open} title=${title} onClose=${onCancel} id="confirm">
    <div class="dialog-text">${body}</div>
    <div class="dialog-actions">
      <button type="button" class="secondary" onClick=${onCancel} disabled=${busy}>Cancel</button>
      <button type="button" class=${danger ? "danger" : "primary"} onClick=${onConfirm} disabled=${busy}>
        ${busy ? "Sending…" : confirmLabel}
      </button>
    </div>
  <//>`;
}

/** Field problems of a ValidationError, by field name. */
export function fieldErrors(result) {
  const out = {};
  for (const f of (result && result.fields) || []) out[f.field] = f.message;
  return out;
}

export function Field({ label, name, error, hint, children }) {
  const id = `f-${name}`;
  return html`<div class=${`field ${error ? "invalid" : ""}`}>
    <label for=${id}>${label}</label>
    ${children(id, error ? `${id}-error` : hint ? `${id}-hint` : undefined)}
    ${hint && !error && html`<small id=${`${id}-hint`} class="hint">${hint}</small>`}
    ${error && html`<small id=${`${id}-error`} class="field-error">${error}</small>`}
  </div>`;
}

/** Announces text to screen readers (and shows it briefly): live arrivals, command outcomes. */
export function Announcer({ message }) {
  return html`<div class="announcer" role="status" aria-live="polite">${message || ""}</div>`;
}

export function newKey(prefix) {
  const random = window.crypto && window.crypto.randomUUID ? window.crypto.randomUUID() : String(Math.random()).slice(2);
  return `${prefix}-${random}`;
}

/** Outcome of a mutation whose result is a union: the value, or an Error member. */
export function refused(value) {
  return value && value.code && value.message && value.__typename !== undefined && value.__typename.endsWith("Error");
}
