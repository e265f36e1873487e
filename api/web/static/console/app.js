// The HES operator console: sign-in, navigation, theme, and the page the URL fragment names.
import { html, render, useState, useEffect } from "./lib/html.js";
import { gql, setCredential, whenUnauthenticated, onLiveStatus } from "./lib/graphql.js";
import { ME, storedCredential, keepCredential, forgetCredential, mainRole } from "./lib/session.js";
import { useRoute, go, parseHash } from "./lib/router.js";
import { Loading } from "./lib/ui.js";
import { Time } from "./lib/format.js";
import { pagesFor } from "./pages/index.js";
import { SignIn } from "./pages/signin.js";

const THEME_KEY = "hes.console.theme";

function preferredTheme() {
  const kept = window.localStorage.getItem(THEME_KEY);
  if (kept === "light" || kept === "dark") return kept;
  return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
}
applyTheme(preferredTheme());

function LiveDot() {
  const [status, setStatus] = useState("idle");
  useEffect(() => onLiveStatus(setStatus), []);
  const text = { idle: "", connecting: "Connecting…", live: "Live", closed: "Reconnecting…" }[status];
  return html`<span class=${`live-dot ${status}`} role="status" title="Live updates over the GraphQL websocket">${text}</span>`;
}

function Shell({ me, onSignOut, theme, onTheme }) {
  const route = useRoute();
  const pages = pagesFor(me);
  const [menuOpen, setMenuOpen] = useState(false);
  const customer = me.roles.length === 1 && me.roles[0] === "customer";
  const page = pages.find((p) => p.path === route.page);
  useEffect(() => {
    // a view these credentials cannot open (or none): their first page, unless the address
    // changed meanwhile to one they can (the effect runs after the render that saw it)
    const current = parseHash().page;
    if (pages.length && !pages.some((p) => p.path === current)) go(pages[0].path, [], {}, { replace: true });
  }, [route.page]);
  useEffect(() => setMenuOpen(false), [route.page, route.rest.join("/")]);
  const title = page ? (customer && page.customerTitle) || page.title : "";
  useEffect(() => {
    document.title = title ? `${title} · HES console` : "HES console";
  }, [title]);
  const Page = page && page.component;
  return html`
    <a class="skip" href="#main">Skip to content</a>
    <header class="top">
      <a class="brand" href="#/${pages.length ? pages[0].path : ""}"><span class="logo" aria-hidden="true">⚡</span> HES console</a>
      <button type="button" class="menu-toggle secondary" aria-expanded=${menuOpen} aria-controls="nav" onClick=${() => setMenuOpen(!menuOpen)}>Menu</button>
      <nav id="nav" class=${menuOpen ? "open" : ""} aria-label="Pages">
        <ul>
          ${pages.map(
            (p) => html`<li><a href=${`#/${p.path}`} aria-current=${p === page ? "page" : undefined}>${(customer && p.customerTitle) || p.title}</a></li>`,
          )}
        </ul>
      </nav>
      <div class="who">
        <${LiveDot} />
        <span class="user" title=${me.expiresAt ? `signed in until ${new Date(me.expiresAt).toISOString()}` : "API key"}>
          <span class="subject">${me.subject}</span> <span class=${`role role-${mainRole(me)}`}>${mainRole(me)}</span>
        </span>
        <button type="button" class="secondary" onClick=${onTheme} aria-label=${`Switch to ${theme === "dark" ? "light" : "dark"} theme`}>
          ${theme === "dark" ? "☀ Light" : "☾ Dark"}
        </button>
        <button type="button" class="secondary" onClick=${onSignOut}>Sign out</button>
      </div>
    </header>
    <main id="main" tabindex="-1">
      ${!pages.length &&
      html`<div class="state error" role="alert">These credentials (${me.subject}) open none of the console's pages.</div>`}
      ${Page && html`<${Page} me=${me} route=${route} customer=${customer} />`}
    </main>
    <footer class="foot">
      <span>Signed in as ${me.subject}${me.customerAccount ? ` (account ${me.customerAccount})` : ""}${me.expiresAt ? html`, until <${Time} value=${me.expiresAt} />` : ""}.</span>
      <span><a href="/graphql">GraphiQL</a> · <a href="/schema">REST API (OpenAPI)</a></span>
    </footer>`;
}

function App() {
  const [theme, setTheme] = useState(preferredTheme());
  const [state, setState] = useState({ me: null, checking: Boolean(storedCredential()), error: null, notice: null });

  async function signIn(credential) {
    setState((s) => ({ ...s, checking: true, error: null }));
    try {
      const data = await gql(ME, {}, credential);
      keepCredential(credential);
      setCredential(credential);
      setState({ me: data.me, checking: false, error: null, notice: null });
    } catch (error) {
      forgetCredential();
      setCredential(null);
      const message =
        error.code === "FORBIDDEN"
          ? "These credentials carry no role the console can use (viewer, operator, admin, auditor or customer)."
          : error.message;
      setState({ me: null, checking: false, error: { code: error.code, message }, notice: null });
    }
  }

  function signOut(notice = null) {
    forgetCredential();
    setCredential(null);
    setState({ me: null, checking: false, error: null, notice });
  }

  useEffect(() => {
    const kept = storedCredential();
    if (kept) signIn(kept);
    return whenUnauthenticated((message) => signOut(`You were signed out: ${message}. Sign in again.`));
  }, []);

  function toggleTheme() {
    const next = theme === "dark" ? "light" : "dark";
    window.localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
    setTheme(next);
  }

  if (state.checking && !state.me) return html`<main id="main" class="center"><${Loading} what="Checking your credentials" /></main>`;
  if (!state.me)
    return html`<${SignIn} onSignIn=${signIn} error=${state.error} notice=${state.notice} theme=${theme} onTheme=${toggleTheme} />`;
  return html`<${Shell} me=${state.me} onSignOut=${() => signOut()} theme=${theme} onTheme=${toggleTheme} />`;
}

const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
