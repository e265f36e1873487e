// GraphiQL over the vendored React and GraphiQL builds (no CDN). Queries and subscriptions go
// to this server's /graphql; put credentials in the Headers tab, e.g.
// {"Authorization": "Bearer <token>"} (they are sent over the websocket too).
"use strict";
(function () {
  const url = new URL("/graphql", window.location.href);
  const ws = new URL(url);
  ws.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams(window.location.search);
  const fetcher = GraphiQL.createFetcher({
    url: url.toString(),
    subscriptionUrl: ws.toString(),
    wsConnectionParams: () => {
      try {
        return JSON.parse(window.localStorage.getItem("graphiql:headers") || "{}");
      } catch (e) {
        return {};
      }
    },
  });
  function keep(name, value) {
    params.set(name, value);
    history.replaceState(null, "", "?" + params.toString());
  }
  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      query: params.get("query") || undefined,
      variables: params.get("variables") || undefined,
      onEditQuery: (q) => keep("query", q),
      onEditVariables: (v) => keep("variables", v),
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      inputValueDeprecation: true,
    }),
  );
})();
