// Sign-in with a token (`hes token --role operator`) or an API key (`hes_…`), kept for this tab.
import { html, useState } from "../lib/html.js";
import { ErrorBox } from "../lib/ui.js";

export function SignIn({ onSignIn, error, notice, theme, onTheme }) {
  const [value, setValue] = useState("");
  const [busy, setBusy] = useState(false);
  async function submit(event) {
    event.preventDefault();
    if (!value.trim()) return;
    setBusy(true);
    await onSignIn(value.trim());
    setBusy(false);
  }
  return html`<main id="main" class="signin">
    <div class="signin-box card">
      <h1><span class="logo" aria-hidden="true">⚡</span> HES console</h1>
      <p>Sign in with a token or an API key. It is kept in this browser tab only and forgotten when the tab closes.</p>
      ${notice && html`<p class="state notice" role="status">${notice}</p>`}
      <${ErrorBox} error=${error} />
      <form onSubmit=${submit}>
        <div class="field">
          <label for="credential">Token or API key</label>
          <textarea id="credential" name="credential" rows="4" autocomplete="off" spellcheck="false"
            aria-describedby="credential-hint" required value=${value}
            onInput=${(e) => setValue(e.target.value)}></textarea>
          <small id="credential-hint" class="hint">A JWT (e.g. from <code>hes token --role operator</code>) or a key starting with <code>hes_</code>.</small>
        </div>
        <div class="form-actions">
          <button type="submit" class="primary" disabled=${busy}>${busy ? "Signing in…" : "Sign in"}</button>
          <button type="button" class="secondary" onClick=${onTheme}>${theme === "dark" ? "☀ Light theme" : "☾ Dark theme"}</button>
        </div>
      </form>
    </div>
  </main>`;
}
