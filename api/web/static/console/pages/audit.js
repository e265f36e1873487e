// Audit: the result of the last `hes audit verify`, any aggregate's history and its state at a
// chosen moment.
import { html, useState, useEffect } from "../lib/html.js";
import { gql } from "../lib/graphql.js";
import { go } from "../lib/router.js";
import { Time, Num } from "../lib/format.js";
import { useQuery, Loaded, Card, Empty, ErrorBox, Badge, Loading } from "../lib/ui.js";

const VERIFY = `{ lastAuditVerification { ranAt ranBy intact anchors aggregates events checkpoints
  unanchoredEvents seconds logs { log intact aggregates events checkpoints checkpointedPosition unanchoredEvents }
  findings { log kind aggregateId version position detail } } }`;
const HISTORY = `query($id: ID!) { history(aggregateId: $id, first: 5000) {
  position application aggregateType aggregateId version type time actor correlationId idempotencyKey payload } }`;
const STATE = `query($id: ID!, $at: DateTime) { aggregateStateAt(aggregateId: $id, at: $at) {
  application aggregateType aggregateId version createdAt updatedAt state } }`;

function Verification() {
  const result = useQuery(VERIFY, {}, []);
  return html`<${Loaded} result=${result} what="Loading the last verification">${(data) => {
    const v = data.lastAuditVerification;
    if (!v) return html`<${Empty}>No verification recorded yet. Run <code>hes audit verify</code> on the server; its result appears here.<//>`;
    return html`<div>
      <p class="verdict">${v.intact ? html`<${Badge} value="CONFIRMED" text="intact" />` : html`<${Badge} value="FAILED" text="tampered" />`}
        Checked <${Time} value=${v.ranAt} /> by <code>${v.ranBy}</code> in <${Num} value=${v.seconds} unit="s" digits=${2} />${`, ${v.anchors ? `${v.anchors} outside anchor${v.anchors === 1 ? "" : "s"}` : "no outside anchors"}.`}</p>
      <div class="table-wrap"><table>
        <caption class="sr-only">Verified logs</caption>
        <thead><tr><th scope="col">Log</th><th scope="col">Result</th><th scope="col" class="n">Aggregates</th><th scope="col" class="n">Events</th>
          <th scope="col" class="n">Checkpoints</th><th scope="col" class="n">Checkpointed up to</th><th scope="col" class="n">After it</th></tr></thead>
        <tbody>${v.logs.map(
          (l) => html`<tr><th scope="row">${l.log}</th><td>${l.intact ? html`<${Badge} value="CONFIRMED" text="intact" />` : html`<${Badge} value="FAILED" text="tampered" />`}</td>
            <td class="n"><${Num} value=${l.aggregates} unit="aggregates" digits=${0} /></td><td class="n"><${Num} value=${l.events} unit="events" digits=${0} /></td>
            <td class="n"><${Num} value=${l.checkpoints} unit="checkpoints" digits=${0} /></td><td class="n">position ${l.checkpointedPosition}</td>
            <td class="n"><${Num} value=${l.unanchoredEvents} unit="events" digits=${0} /></td></tr>`,
        )}</tbody></table></div>
      ${v.findings.length > 0 &&
      html`<h3>Findings</h3><div class="table-wrap"><table>
        <thead><tr><th scope="col">Log</th><th scope="col">Kind</th><th scope="col">Aggregate</th><th scope="col" class="n">Version</th><th scope="col">Detail</th></tr></thead>
        <tbody>${v.findings.map(
          (f) => html`<tr><td>${f.log}</td><td>${f.kind}</td>
            <td>${f.aggregateId ? html`<a href=${`#/audit?id=${f.aggregateId}`}><code>${f.aggregateId}</code></a>` : html`checkpoint ${f.position}`}</td>
            <td class="n">${f.version === null ? "—" : f.version}</td><td>${f.detail}</td></tr>`,
        )}</tbody></table></div>`}
    </div>`;
  }}<//>`;
}

function localInput(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function Value({ value }) {
  if (value === null || value === undefined) return html`<span class="muted">—</span>`;
  if (typeof value === "object") return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
  return html`${String(value)}`;
}

function StateAt({ id }) {
  const [at, setAt] = useState(localInput(new Date()));
  const [state, setState] = useState({ data: null, loading: false, error: null });
  async function load(event) {
    if (event) event.preventDefault();
    setState({ data: null, loading: true, error: null });
    try {
      const data = await gql(STATE, { id, at: new Date(at).toISOString() });
      setState({ data: data.aggregateStateAt, loading: false, error: null });
    } catch (error) {
      setState({ data: null, loading: false, error });
    }
  }
  useEffect(() => {
    load();
  }, [id]);
  const s = state.data;
  return html`<div>
    <form class="inline-form" onSubmit=${load}>
      <div class="field"><label for="audit-at">State at (your time zone)</label>
        <input id="audit-at" type="datetime-local" step="1" value=${at} onInput=${(e) => setAt(e.target.value)} /></div>
      <button type="submit" class="primary">Show state</button>
    </form>
    ${state.loading && html`<${Loading} what="Rebuilding the state" />`}
    ${state.error && html`<${ErrorBox} error=${state.error} />`}
    ${s &&
    html`<p>${s.aggregateType} in the ${s.application} log, version ${s.version} (event of <${Time} value=${s.updatedAt} />; created <${Time} value=${s.createdAt} />):</p>
      <dl class="facts state">${Object.entries(s.state).map(([k, v]) => html`<dt>${k.replace(/_/g, " ")}</dt><dd><${Value} value=${v} /></dd>`)}</dl>`}
  </div>`;
}

function Timeline({ id }) {
  const result = useQuery(HISTORY, { id }, [id]);
  return html`<${Loaded} result=${result} what="Loading the history">${(data) =>
    !data.history.length
      ? html`<${Empty}>No event recorded for ${id}.<//>`
      : html`<p class="muted">${data.history[0].aggregateType} <code>${data.history[0].aggregateId}</code> in the ${data.history[0].application} log, ${data.history.length} event${data.history.length === 1 ? "" : "s"}, newest first.</p>
        <ol class="timeline" reversed>${[...data.history].reverse().map(
          (e) => html`<li>
            <div class="timeline-head"><strong>${e.type}</strong> <span class="muted">v${e.version}${e.position ? `, position ${e.position}` : ""}</span> · <${Time} value=${e.time} /> · by <span class="actor">${e.actor || "unknown"}</span></div>
            <div class="muted small">correlation ${e.correlationId || "—"}${e.idempotencyKey ? ` · idempotency key ${e.idempotencyKey}` : ""}</div>
            <details><summary>Payload</summary><pre class="json">${JSON.stringify(e.payload, null, 2)}</pre></details>
          </li>`,
        )}</ol>`}<//>`;
}

export function Audit({ route }) {
  const id = route.params.get("id") || "";
  const [draft, setDraft] = useState(id);
  useEffect(() => setDraft(id), [id]);
  return html`<div class="page audit">
    <div class="page-head"><h1>Audit</h1>
      <p class="muted">Every event is hash-chained to its predecessor; <code>hes audit verify</code> recomputes the chains and checkpoints.</p></div>
    <${Card} title="Last verification" id="audit-verify"><${Verification} /><//>
    <${Card} title="History of an aggregate" id="audit-lookup">
      <form class="inline-form" role="search" onSubmit=${(e) => { e.preventDefault(); go("audit", [], { id: draft.trim() }); }}>
        <div class="field"><label for="audit-id">Meter serial, tariff region, alert cause or any aggregate id</label>
          <input id="audit-id" value=${draft} required onInput=${(e) => setDraft(e.target.value)} autocomplete="off" /></div>
        <button type="submit" class="primary">Show history</button>
      </form>
    <//>
    ${id && html`<${Card} title="State at a moment" id="audit-state"><${StateAt} id=${id} /><//>`}
    ${id && html`<${Card} title="Recorded events" id="audit-history"><${Timeline} id=${id} /><//>`}
  </div>`;
}
