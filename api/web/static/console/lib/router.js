// Views are addressed by the URL fragment: #/meters?region=North, #/meters/<id>, …
// (the server serves one page at /console; reloading or sharing a link keeps the view).
import { useState, useEffect } from "./html.js";

export function parseHash(hash = window.location.hash) {
  const text = hash.replace(/^#\/?/, "");
  const [path, query = ""] = text.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "", rest: parts.slice(1), params: new URLSearchParams(query) };
}

export function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const onChange = () => setRoute(parseHash());
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

/** "#/page/a/b?k=v" from parts and parameters (empty parameters left out). */
export function href(page, rest = [], params = {}) {
  const path = [page, ...rest].map(encodeURIComponent).join("/");
  const query = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""),
  ).toString();
  return `#/${path}${query ? `?${query}` : ""}`;
}

/** Show a view; `replace` swaps the history entry instead of adding one (redirects). */
export function go(page, rest = [], params = {}, { replace = false } = {}) {
  const target = href(page, rest, params);
  if (replace) window.location.replace(target);
  else window.location.hash = target;
}
