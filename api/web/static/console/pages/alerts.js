// Alerts: the priority-ordered inbox with filters, acknowledge and resolve, live changes.
import { html, useState, useEffect, useMemo } from "../lib/html.js";
import { gql } from "../lib/graphql.js";
import { may } from "../lib/session.js";
import { href, go } from "../lib/router.js";
import { Time, Num, formatNumber } from "../lib/format.js";
import {
  useSubscription, Card, Loading, ErrorBox, Empty, Badge, Dialog, Announcer, newKey, fieldErrors, Field,
} from "../lib/ui.js";

export const ALERT_FIELDS = `id type severity status region meterId message evidence dedupKey occurrences
  raisedAt lastSeen customersAffected priority acknowledgedBy acknowledgedAt resolvedBy resolvedAt
  resolutionNote autoResolved version`;
const LIST = `query($status: [AlertStatus!], $region: String, $severity: Severity, $type: AlertType, $after: String) {
  alerts(status: $status, region: $region, severity: $severity, type: $type, first: 50, after: $after) {
    edges { node { ${ALERT_FIELDS} } } pageInfo { hasNextPage endCursor } } }`;
const CHANGED = `subscription($region: String) { alertChanged(region: $region) { ${ALERT_FIELDS} } }`;
const RESULT = `__typename ... on Alert { ${ALERT_FIELDS} }
  ... on ValidationError { code message fields { field rule message } } ... on Error { code message }`;
const ACK = `mutation($id: ID!, $key: String) { acknowledgeAlert(id: $id, idempotencyKey: $key) { ${RESULT} } }`;
const RESOLVE = `mutation($id: ID!, $note: String!, $key: String) { resolveAlert(id: $id, note: $note, idempotencyKey: $key) { ${RESULT} } }`;

const STATUSES = ["OPEN", "ACKNOWLEDGED", "RESOLVED"];
const SEVERITIES = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];
const TYPES = ["OVERLOAD", "ANOMALY", "COMM_FAILURE", "OUTAGE", "TAMPER", "THRESHOLD"];
const RANK = Object.fromEntries(SEVERITIES.map((s, i) => [s, i]));

function filtersOf(params) {
  const status = (params.get("status") || "OPEN,ACKNOWLEDGED").split(",").filter((s) => STATUSES.includes(s));
  return {
    status,
    severity: SEVERITIES.includes(params.get("severity")) ? params.get("severity") : "",
    type: TYPES.includes(params.get("type")) ? params.get("type") : "",
    region: params.get("region") || "",
  };
}

function matches(alert, f) {
  return (
    f.status.includes(alert.status) &&
    (!f.severity || RANK[alert.severity] >= RANK[f.severity]) &&
    (!f.type || alert.type === f.type) &&
    (!f.region || alert.region.toUpperCase() === f.region.trim().toUpperCase())
  );
}

function Filters({ filters }) {
  const [draft, setDraft] = useState(filters);
  useEffect(() => setDraft(filters), [JSON.stringify(filters)]);
  function apply(event) {
    event.preventDefault();
    go("alerts", [], {
      status: draft.status.join(","),
      severity: draft.severity,
      type: draft.type,
      region: draft.region.trim(),
    });
  }
  function toggle(status) {
    const has = draft.status.includes(status);
    setDraft({ ...draft, status: has ? draft.status.filter((s) => s !== status) : [...draft.status, status] });
  }
  return html`<form class="filters" onSubmit=${apply} aria-label="Alert filters">
    <fieldset class="checks">
      <legend>Status</legend>
      ${STATUSES.map(
        (s) => html`<label><input type="checkbox" checked=${draft.status.includes(s)} onChange=${() => toggle(s)} /> ${s.toLowerCase()}</label>`,
      )}
    </fieldset>
    <div class="field"><label for="af-severity">Severity at least</label>
      <select id="af-severity" value=${draft.severity} onChange=${(e) => setDraft({ ...draft, severity: e.target.value })}>
        <option value="">any</option>${SEVERITIES.map((s) => html`<option value=${s}>${s.toLowerCase()}</option>`)}
      </select></div>
    <div class="field"><label for="af-type">Type</label>
      <select id="af-type" value=${draft.type} onChange=${(e) => setDraft({ ...draft, type: e.target.value })}>
        <option value="">any</option>${TYPES.map((t) => html`<option value=${t}>${t.replace(/_/g, " ").toLowerCase()}</option>`)}
      </select></div>
    <div class="field"><label for="af-region">Region</label>
      <input id="af-region" value=${draft.region} onInput=${(e) => setDraft({ ...draft, region: e.target.value })} /></div>
    <div class="form-actions"><button type="submit" class="primary">Apply filters</button></div>
  </form>`;
}

function Details({ alert }) {
  return html`<dl class="facts">
    <dt>Cause</dt><dd><code>${alert.dedupKey}</code></dd>
    <dt>Occurrences</dt><dd><${Num} value=${alert.occurrences} unit="times" digits=${0} /></dd>
    <dt>Customers affected</dt><dd><${Num} value=${alert.customersAffected} unit="customers" digits=${0} /></dd>
    <dt>Last seen</dt><dd><${Time} value=${alert.lastSeen} /></dd>
    <dt>Priority</dt><dd><${Num} value=${alert.priority} unit="points" digits=${1} /></dd>
    ${alert.meterId && html`<dt>Meter</dt><dd><a href=${href("meters", [alert.meterId])}>open the meter</a></dd>`}
    ${alert.acknowledgedBy && html`<dt>Acknowledged</dt><dd>by ${alert.acknowledgedBy}, <${Time} value=${alert.acknowledgedAt} /></dd>`}
    ${alert.resolvedAt && html`<dt>Resolved</dt><dd>${alert.autoResolved ? "automatically (cause cleared)" : `by ${alert.resolvedBy}`}, <${Time} value=${alert.resolvedAt} />${alert.resolutionNote ? ` — “${alert.resolutionNote}”` : ""}</dd>`}
    <dt>Evidence</dt><dd><pre class="json">${JSON.stringify(alert.evidence, null, 2)}</pre></dd>
  </dl>`;
}

function AlertRow({ alert, canWork, onAck, onResolve, fresh, focused }) {
  const [open, setOpen] = useState(focused);
  const busy = alert.busy;
  return html`<li class=${`alert-row sev-${alert.severity.toLowerCase()} ${fresh ? "fresh" : ""} ${focused ? "focused" : ""}`} id=${`alert-${alert.id}`} data-status=${alert.status}>
    <div class="alert-main">
      <div class="alert-title">
        <${Badge} value=${alert.severity} /> <${Badge} value=${alert.status} />
        <strong>${alert.type.replace(/_/g, " ")}</strong> · ${alert.region}
      </div>
      <p class="alert-message">${alert.message}</p>
      <p class="muted small">Raised <${Time} value=${alert.raisedAt} /> · ${formatNumber(alert.occurrences, 0)} occurrence${alert.occurrences === 1 ? "" : "s"}</p>
    </div>
    <div class="alert-actions">
      <button type="button" class="secondary" aria-expanded=${open} onClick=${() => setOpen(!open)}>${open ? "Hide details" : "Details"}</button>
      ${canWork && alert.status === "OPEN" && html`<button type="button" class="primary" disabled=${busy} onClick=${() => onAck(alert)}>Acknowledge</button>`}
      ${canWork && alert.status !== "RESOLVED" && html`<button type="button" class="secondary" disabled=${busy} onClick=${() => onResolve(alert)}>Resolve…</button>`}
    </div>
    ${open && html`<div class="alert-details"><${Details} alert=${alert} /></div>`}
  </li>`;
}

function ResolveDialog({ alert, onClose, onDone }) {
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState(null);
  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setProblem(null);
    try {
      const data = await gql(RESOLVE, { id: alert.id, note, key: newKey("resolve") });
      const result = data.resolveAlert;
      if (result.__typename === "Alert") onDone(result);
      else setProblem(result);
    } catch (e) {
      setProblem(e);
    }
    setBusy(false);
  }
  const errors = fieldErrors(problem);
  return html`<${Dialog} open=${Boolean(alert)} title="Resolve alert" onClose=${onClose} id="resolve">
    ${alert && html`<form onSubmit=${submit}>
      <p>${alert.type.replace(/_/g, " ")} in ${alert.region}: ${alert.message}</p>
      <${Field} label="Resolution note (required)" name="note" error=${errors.note}>
        ${(id, described) => html`<textarea id=${id} rows="3" required maxlength="500" aria-describedby=${described} value=${note} onInput=${(e) => setNote(e.target.value)}></textarea>`}
      <//>
      ${problem && !errors.note && html`<${ErrorBox} error=${problem} />`}
      <div class="dialog-actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <button type="submit" class="primary" disabled=${busy || !note.trim()}>${busy ? "Resolving…" : "Resolve"}</button>
      </div>
    </form>`}
  <//>`;
}

export function Alerts({ me, route }) {
  const filters = useMemo(() => filtersOf(route.params), [route.params.toString()]);
  const focus = route.params.get("focus");
  const [state, setState] = useState({ items: [], page: null, loading: true, error: null });
  const [fresh, setFresh] = useState(new Set());
  const [announce, setAnnounce] = useState("");
  const [resolving, setResolving] = useState(null);
  const [actionError, setActionError] = useState(null);
  const canWork = may(me, "Mutation.acknowledgeAlert");

  async function load(after = null) {
    setState((s) => ({ ...s, loading: true, error: null }));
    try {
      const data = await gql(LIST, {
        status: filters.status.length ? filters.status : null,
        region: filters.region || null,
        severity: filters.severity || null,
        type: filters.type || null,
        after,
      });
      const items = data.alerts.edges.map((e) => e.node);
      setState((s) => ({ items: after ? [...s.items, ...items] : items, page: data.alerts.pageInfo, loading: false, error: null }));
    } catch (error) {
      setState((s) => ({ ...s, loading: false, error }));
    }
  }
  useEffect(() => {
    load();
  }, [JSON.stringify(filters)]);
  useEffect(() => {
    if (focus && !state.loading) {
      const el = document.getElementById(`alert-${focus}`);
      if (el) el.scrollIntoView({ block: "center" });
    }
  }, [focus, state.loading]);

  function upsert(alert) {
    setState((s) => {
      const known = s.items.some((a) => a.id === alert.id);
      if (known) return { ...s, items: s.items.map((a) => (a.id === alert.id ? { ...alert } : a)) };
      if (!matches(alert, filters)) return s;
      return { ...s, items: [alert, ...s.items] };
    });
  }
  const liveError = useSubscription(CHANGED, { region: filters.region || null }, (data) => {
    const alert = data.alertChanged;
    upsert(alert);
    if (alert.version === 1) {
      setFresh((f) => new Set([...f, alert.id]));
      setAnnounce(`New ${alert.severity.toLowerCase()} ${alert.type.replace(/_/g, " ").toLowerCase()} alert in ${alert.region}`);
    } else {
      setAnnounce(`Alert in ${alert.region} is now ${alert.status.toLowerCase()}`);
    }
  }, [filters.region]);

  async function acknowledge(alert) {
    setActionError(null);
    setState((s) => ({ ...s, items: s.items.map((a) => (a.id === alert.id ? { ...a, busy: true } : a)) }));
    try {
      const data = await gql(ACK, { id: alert.id, key: newKey("ack") });
      const result = data.acknowledgeAlert;
      if (result.__typename === "Alert") {
        upsert(result);
        setAnnounce(`Alert acknowledged by ${result.acknowledgedBy}`);
      } else {
        setActionError(result);
        upsert({ ...alert, busy: false });
      }
    } catch (e) {
      setActionError(e);
      upsert({ ...alert, busy: false });
    }
  }

  return html`<div class="page alerts">
    <div class="page-head"><h1>Alerts</h1>
      <p class="muted">Highest priority first. New alerts and changes by anyone appear here as they happen.</p></div>
    <${Card} title="Filters" id="alert-filters"><${Filters} filters=${filters} /><//>
    <${Announcer} message=${announce} />
    ${liveError && html`<${ErrorBox} error=${liveError} />`}
    ${actionError && html`<${ErrorBox} error=${actionError} />`}
    <${Card} title="Inbox" id="alert-inbox">
      ${state.error && html`<${ErrorBox} error=${state.error} retry=${() => load()} />`}
      ${state.loading && !state.items.length && html`<${Loading} what="Loading alerts" />`}
      ${!state.loading && !state.error && !state.items.length && html`<${Empty}>No alert matches these filters.<//>`}
      ${state.items.length > 0 &&
      html`<ul class="alert-list" aria-label="Alerts">
        ${state.items.map(
          (a) => html`<${AlertRow} key=${a.id} alert=${a} canWork=${canWork} fresh=${fresh.has(a.id)} focused=${a.id === focus}
            onAck=${acknowledge} onResolve=${setResolving} />`,
        )}
      </ul>`}
      ${state.page && state.page.hasNextPage &&
      html`<div class="form-actions"><button type="button" class="secondary" disabled=${state.loading} onClick=${() => load(state.page.endCursor)}>Load more</button></div>`}
    <//>
    <${ResolveDialog} alert=${resolving} onClose=${() => setResolving(null)}
      onDone=${(a) => { upsert(a); setResolving(null); setAnnounce(`Alert resolved by ${a.resolvedBy}`); }} />
  </div>`;
}
