// Imports: the CSV template, uploading a file, and the report of every row.
import { html, useState } from "../lib/html.js";
import { rest } from "../lib/graphql.js";
import { href } from "../lib/router.js";
import { Card, ErrorBox, Stat, Empty, Loading, Announcer } from "../lib/ui.js";
import { Num, formatNumber } from "../lib/format.js";

const TEMPLATE = "/api/v1/templates/meters";
const IMPORT = "/api/v1/imports/meters";

function Report({ report, fileName }) {
  return html`<div class="import-report">
    <p>Report of <strong>${fileName}</strong>:</p>
    <div class="stats" aria-label="Import totals">
      <${Stat} label="Rows"><${Num} value=${report.rows} unit="rows" digits=${0} /><//>
      <${Stat} label="Registered" tone=${report.created ? "ok" : ""}><${Num} value=${report.created} unit="meters" digits=${0} /><//>
      <${Stat} label="Unchanged" hint="identical to a registered meter"><${Num} value=${report.unchanged} unit="meters" digits=${0} /><//>
      <${Stat} label="Rejected" tone=${report.rejected ? "bad" : ""}><${Num} value=${report.rejected} unit="rows" digits=${0} /><//>
    </div>
    ${report.errors.length === 0
      ? html`<${Empty}>Every row was accepted.<//>`
      : html`<div class="table-wrap"><table class="import-errors">
          <caption>Rejected rows (${formatNumber(report.errors.length, 0)} problem${report.errors.length === 1 ? "" : "s"})</caption>
          <thead><tr><th scope="col" class="n">Line</th><th scope="col">Serial</th><th scope="col">Column</th><th scope="col">Reason</th></tr></thead>
          <tbody>${report.errors.map(
            (e) => html`<tr><td class="n">${e.line}</td><td>${e.serial || html`<span class="muted">—</span>`}</td>
              <td><code>${e.field}</code></td><td>${e.reason}</td></tr>`,
          )}</tbody></table></div>`}
    ${report.created > 0 && html`<p><a href=${href("meters", [], { status: "REGISTERED" })}>See the registered meters</a></p>`}
  </div>`;
}

export function Imports() {
  const [file, setFile] = useState(null);
  const [region, setRegion] = useState("");
  const [state, setState] = useState({ busy: false, report: null, error: null, fileName: "" });
  async function upload(event) {
    event.preventDefault();
    if (!file) return;
    setState({ busy: true, report: null, error: null, fileName: file.name });
    const body = new FormData();
    body.append("data", file, file.name);
    const query = region.trim() ? `?region=${encodeURIComponent(region.trim())}` : "";
    try {
      const response = await rest(`${IMPORT}${query}`, { method: "POST", body });
      const answer = await response.json().catch(() => ({}));
      if (response.ok) setState({ busy: false, report: answer, error: null, fileName: file.name });
      else {
        const fields = (answer.errors || []).map((e) => `${e.field}: ${e.message}`).join("; ");
        setState({ busy: false, report: null, error: { code: answer.code, message: `${answer.detail || `HTTP ${response.status}`}${fields ? ` (${fields})` : ""}` }, fileName: file.name });
      }
    } catch (e) {
      setState({ busy: false, report: null, error: { message: `Upload failed: ${e.message}` }, fileName: file.name });
    }
  }
  const done = state.report ? `Import finished: ${state.report.created} registered, ${state.report.rejected} rejected` : "";
  return html`<div class="page imports">
    <div class="page-head"><h1>Imports</h1>
      <p class="muted">Register many meters from a CSV file: every valid row is registered, every problem is reported by line and column. Importing the same rows again changes nothing.</p></div>
    <${Card} title="1. Template" id="import-template">
      <p>The header names the columns; the second row is an example. Optional extra columns: <code>region</code>, <code>phases</code>, <code>transport</code>, <code>clientAddress</code>, <code>serverAddress</code>, <code>security</code>.</p>
      <p><a class="button secondary" href=${TEMPLATE} download="meters-template.csv">Download the meter template (CSV)</a></p>
    <//>
    <${Card} title="2. Upload" id="import-upload">
      <form class="inline-form" onSubmit=${upload}>
        <div class="field"><label for="imp-file">CSV file (UTF-8, at most 100,000 rows)</label>
          <input id="imp-file" type="file" accept=".csv,text/csv" required onChange=${(e) => setFile(e.target.files[0] || null)} /></div>
        <div class="field"><label for="imp-region">Region for rows without one (optional)</label>
          <input id="imp-region" value=${region} onInput=${(e) => setRegion(e.target.value)} /></div>
        <div class="form-actions"><button type="submit" class="primary" disabled=${!file || state.busy}>${state.busy ? "Importing…" : "Import"}</button></div>
      </form>
    <//>
    <${Announcer} message=${done} />
    <${Card} title="3. Report" id="import-report">
      ${state.busy && html`<${Loading} what=${`Importing ${state.fileName}`} />`}
      ${state.error && html`<${ErrorBox} error=${state.error} />`}
      ${state.report && html`<${Report} report=${state.report} fileName=${state.fileName} />`}
      ${!state.busy && !state.error && !state.report && html`<${Empty}>No file imported in this session yet.<//>`}
    <//>
  </div>`;
}
