// One meter: status, customer, connection, latest values, consumption chart, history timeline,
// DLMS tasks and state, remote commands with confirmation and live status, billing intervals.
import { html, useState, useEffect, useMemo, useRef } from "../lib/html.js";
import { gql, rest } from "../lib/graphql.js";
import { may } from "../lib/session.js";
import { href } from "../lib/router.js";
import { Time, Ago, Num, Quantity, label } from "../lib/format.js";
import { Chart } from "../lib/chart.js";
import {
  useQuery, Loaded, Card, Loading, ErrorBox, Empty, Badge, Reach, ConfirmDialog, Announcer, newKey,
} from "../lib/ui.js";

const METER = `query($id: ID!) { meter(id: $id) {
  id serial manufacturer model firmware meterType phases region area status customerAccount
  location { address latitude longitude }
  connection { host port transport clientAddress serverAddress physicalAddress security }
  concentratorId simCard registeredAt commissionedAt decommissionedAt decommissionReason
  updatedAt version lastSeen online } }`;
const LATEST = `query($id: String!) { latestReadings(meter: $id) {
  quantity { alias unit obis } ts value quality source } }`;
const USAGE = `query($id: String!, $interval: Interval!, $from: DateTime!, $to: DateTime!) {
  aggregates(meter: $id, interval: $interval, from: $from, to: $to, quantity: "energy_import") {
    bucket max count } }`;
const HISTORY = `query($id: ID!) { history(aggregateId: $id, first: 500) {
  version type time actor correlationId payload } }`;
const DLMS = `query($id: ID!) {
  meterDlmsState(id: $id) { relayConnected relayChangedAt keyVersion keysChangedAt eventsLogged lastEventAt }
  meterCommunication(id: $id) { attempts successes failures successRate consecutiveFailures lastAttemptAt lastSuccessAt lastError lastErrorAt }
  meterCollection(id: $id) { task status nextDue running lastRunAt lastOkAt consecutiveFailures lastError }
  loadProfileLedger(id: $id, days: 7) { day periodSeconds expected received absent missing }
  meterLogEvents(id: $id, first: 20) { log at code kind recordedAt } }`;
const COMMAND_FIELDS = `id kind status attempt requestedBy requestedAt sentAt finishedAt reason quantities
  result { relayConnected controlState clockBefore clockAfter values { obis value unit at } }`;
const COMMANDS = `query($id: ID!) { remoteCommands(meterId: $id, first: 20) { ${COMMAND_FIELDS} } }`;
const ONE_COMMAND = `query($id: ID!) { remoteCommand(id: $id) { ${COMMAND_FIELDS} } }`;
const REQUESTED = `__typename ... on RemoteCommand { ${COMMAND_FIELDS} }
  ... on ValidationError { code message fields { field rule message } } ... on Error { code message }`;
const ACTIONS = {
  read: {
    door: "Mutation.readMeterOnDemand", label: "Read now", title: "Read the meter now?",
    mutation: `mutation($id: ID!, $key: String, $q: [String!]!) { readMeterOnDemand(id: $id, quantities: $q, idempotencyKey: $key) { ${REQUESTED} } }`,
    body: "The head-end opens a DLMS session and reads energy, power, voltage and current now.",
  },
  disconnect: {
    door: "Mutation.disconnectMeter", label: "Disconnect", title: "Disconnect the supply?", danger: true,
    mutation: `mutation($id: ID!, $key: String) { disconnectMeter(id: $id, idempotencyKey: $key) { ${REQUESTED} } }`,
    body: "The meter's relay opens: the premises lose power until someone reconnects it.",
  },
  reconnect: {
    door: "Mutation.reconnectMeter", label: "Reconnect", title: "Reconnect the supply?",
    mutation: `mutation($id: ID!, $key: String) { reconnectMeter(id: $id, idempotencyKey: $key) { ${REQUESTED} } }`,
    body: "The meter's relay closes: power returns to the premises.",
  },
  clock: {
    door: "Mutation.synchronizeMeterClock", label: "Sync clock", title: "Set the meter's clock?",
    mutation: `mutation($id: ID!, $key: String) { synchronizeMeterClock(id: $id, idempotencyKey: $key) { ${REQUESTED} } }`,
    body: "The meter's clock is set to the head-end's UTC time.",
  },
};
const READ_QUANTITIES = ["energy_import", "power_import", "voltage_l1", "current_l1"];
const RANGES = {
  "24h": { label: "24 hours", hours: 24, interval: "M15", perDay: false },
  "7d": { label: "7 days", hours: 24 * 7, interval: "M30", perDay: false },
  "30d": { label: "30 days", hours: 24 * 30, interval: "M30", perDay: true },
};

function Facts({ meter }) {
  const c = meter.connection;
  return html`<dl class="facts">
    <dt>Status</dt><dd><${Badge} value=${meter.status} /></dd>
    <dt>Reachability</dt><dd><${Reach} meter=${meter} /> last reading <${Ago} value=${meter.lastSeen} /></dd>
    <dt>Customer</dt><dd>${meter.customerAccount || html`<span class="muted">none assigned</span>`}</dd>
    <dt>Region / area</dt><dd><a href=${href("meters", [], { region: meter.region })}>${meter.region}</a> / ${meter.area}</dd>
    <dt>Location</dt><dd>${meter.location ? meter.location.address : html`<span class="muted">not commissioned</span>`}</dd>
    <dt>Meter</dt><dd>${meter.manufacturer} ${meter.model}, firmware ${meter.firmware}, ${meter.phases} phase${meter.phases === 1 ? "" : "s"}${meter.meterType ? `, ${meter.meterType}` : ""}</dd>
    <dt>Connection</dt><dd><code>${c.host}:${c.port}</code> ${c.transport.toLowerCase()}, ${c.security.replace("_", "-").toLowerCase()} security, client ${c.clientAddress}, server ${c.serverAddress}${c.physicalAddress !== null ? `, physical ${c.physicalAddress}` : ""}</dd>
    ${meter.concentratorId && html`<dt>Concentrator</dt><dd>${meter.concentratorId}</dd>`}
    ${meter.simCard && html`<dt>SIM card</dt><dd>${meter.simCard}</dd>`}
    <dt>Registered</dt><dd><${Time} value=${meter.registeredAt} /></dd>
    ${meter.commissionedAt && html`<dt>Commissioned</dt><dd><${Time} value=${meter.commissionedAt} /></dd>`}
    ${meter.decommissionedAt && html`<dt>Decommissioned</dt><dd><${Time} value=${meter.decommissionedAt} /> — ${meter.decommissionReason}</dd>`}
  </dl>`;
}

function Latest({ id }) {
  const result = useQuery(LATEST, { id }, [id]);
  return html`<${Loaded} result=${result} what="Loading the latest values">${(data) =>
    data.latestReadings.length === 0
      ? html`<${Empty}>No reading stored in the raw-reading retention (7 days by default).<//>`
      : html`<div class="table-wrap"><table>
          <caption class="sr-only">Newest reading of each quantity</caption>
          <thead><tr><th scope="col">Quantity</th><th scope="col" class="n">Value</th><th scope="col">Read at</th><th scope="col">Source</th><th scope="col">Quality</th></tr></thead>
          <tbody>${data.latestReadings.map(
            (r) => html`<tr>
              <th scope="row" title=${r.quantity.obis}>${label(r.quantity.alias)}</th>
              <td class="n"><${Quantity} value=${r.value} unit=${r.quantity.unit} /></td>
              <td><${Time} value=${r.ts} /></td><td>${r.source}</td><td>${r.quality.join(", ")}</td>
            </tr>`,
          )}</tbody></table></div>`}<//>`;
}

/** Energy per window from the register's maximum per aggregate (it only grows). */
function usage(rows, perDay) {
  const times = [];
  const values = [];
  let previous = null;
  for (const row of rows) {
    const at = new Date(row.bucket);
    if (previous !== null) {
      const kwh = Math.max(0, row.max - previous) / 1000;
      if (perDay) {
        const day = new Date(at.getFullYear(), at.getMonth(), at.getDate());
        if (times.length && times[times.length - 1].getTime() === day.getTime()) values[values.length - 1] += kwh;
        else {
          times.push(day);
          values.push(kwh);
        }
      } else {
        times.push(at);
        values.push(kwh);
      }
    }
    previous = row.max;
  }
  return { times, values };
}

function Consumption({ id }) {
  const [range, setRange] = useState("24h");
  const spec = RANGES[range];
  const period = useMemo(() => {
    const to = new Date();
    return { from: new Date(to.getTime() - spec.hours * 3600 * 1000).toISOString(), to: to.toISOString() };
  }, [range]);
  const result = useQuery(USAGE, { id, interval: spec.interval, ...period }, [id, range]);
  const chart = useMemo(() => (result.data ? usage(result.data.aggregates, spec.perDay) : null), [result.data]);
  const series = useMemo(() => chart && [{ label: "Energy import", unit: "kWh", values: chart.values, kind: "bars" }], [chart]);
  const span = useMemo(() => [new Date(period.from), new Date(period.to)], [period]);
  const total = chart ? chart.values.reduce((a, b) => a + b, 0) : 0;
  return html`<div>
    <div class="segmented" role="group" aria-label="Period">
      ${Object.entries(RANGES).map(
        ([key, r]) => html`<button type="button" class=${key === range ? "primary" : "secondary"} aria-pressed=${key === range} onClick=${() => setRange(key)}>${r.label}</button>`,
      )}
    </div>
    <${Loaded} result=${result} what="Loading consumption">${() =>
      !chart.times.length
        ? html`<${Empty}>No energy readings in the last ${spec.label}.<//>`
        : html`<p class="muted">Total <${Num} value=${total} unit="kWh" digits=${2} /> in the last ${spec.label} (${spec.perDay ? "per day" : spec.interval === "M15" ? "per 15 minutes" : "per 30 minutes"}).</p>
          <${Chart} times=${chart.times} series=${series} range=${span} caption=${`Energy imported per ${spec.perDay ? "day" : spec.interval === "M15" ? "15 minutes" : "30 minutes"}, last ${spec.label}`} id="consumption-chart" />`}<//>
  </div>`;
}

/** "serial: SN-1 · connection host: 10.0.0.1 · …": an event's fields, nested ones flattened. */
function summary(payload, prefix = "") {
  const skip = new Set(["originator_id", "originator_version", "timestamp", "meta"]);
  return Object.entries(payload || {})
    .filter(([k, v]) => !skip.has(k) && v !== null && v !== undefined)
    .map(([k, v]) => {
      const name = `${prefix}${k.replace(/_/g, " ")}`;
      if (Array.isArray(v)) return `${name}: ${v.join(", ")}`;
      if (typeof v === "object") return summary(v, prefix === "" && k === "spec" ? "" : `${name} `);
      return `${name}: ${v}`;
    })
    .filter(Boolean)
    .join(" · ");
}

function History({ id }) {
  const result = useQuery(HISTORY, { id }, [id]);
  return html`<${Loaded} result=${result} what="Loading the history">${(data) =>
    !data.history.length
      ? html`<${Empty}>No recorded event.<//>`
      : html`<ol class="timeline" reversed>${[...data.history].reverse().map(
          (e) => html`<li>
            <div class="timeline-head"><strong>${e.type}</strong> <span class="muted">v${e.version}</span> · <${Time} value=${e.time} /> · by <span class="actor">${e.actor || "unknown"}</span></div>
            <div class="timeline-body small">${summary(e.payload)}</div>
            ${e.correlationId && html`<div class="muted small">correlation ${e.correlationId}</div>`}
          </li>`,
        )}</ol>`}<//>`;
}

function Dlms({ id, refresh }) {
  const result = useQuery(DLMS, { id }, [id, refresh]);
  return html`<${Loaded} result=${result} what="Loading DLMS state">${(d) => {
    const s = d.meterDlmsState;
    const c = d.meterCommunication;
    return html`<div class="dlms">
      <dl class="facts">
        <dt>Supply (relay)</dt><dd data-relay=${s && s.relayConnected !== null ? String(s.relayConnected) : "unknown"}>${
          !s || s.relayConnected === null
            ? html`<span class="muted">not read back yet</span>`
            : s.relayConnected
              ? html`<${Badge} value="CONFIRMED" text="connected" />`
              : html`<${Badge} value="FAILED" text="disconnected" />`
        }${s && s.relayChangedAt ? html` since <${Time} value=${s.relayChangedAt} />` : ""}</dd>
        <dt>Key version</dt><dd>${s ? s.keyVersion : 0}${s && s.keysChangedAt ? html`, changed <${Time} value=${s.keysChangedAt} />` : ""}</dd>
        <dt>Sessions</dt><dd>${c ? html`<${Num} value=${c.successes} unit=${`of ${c.attempts} succeeded`} digits=${0} /> (<${Num} value=${100 * (c.successRate || 0)} unit="%" digits=${1} />), last <${Ago} value=${c.lastAttemptAt} />` : html`<span class="muted">no session yet</span>`}</dd>
        ${c && c.lastError && html`<dt>Last error</dt><dd>${c.lastError} (<${Time} value=${c.lastErrorAt} />)</dd>`}
      </dl>
      <h3>Collection tasks</h3>
      ${d.meterCollection.length === 0
        ? html`<${Empty}>No collection task planned for this meter yet (the DLMS scheduler plans the meters in service).<//>`
        : html`<div class="table-wrap"><table><thead><tr><th scope="col">Task</th><th scope="col">Next run</th><th scope="col">Last run</th><th scope="col">Last success</th><th scope="col">Last outcome</th><th scope="col" class="n">Failures</th></tr></thead>
          <tbody>${d.meterCollection.map(
            (t) => html`<tr><th scope="row">${t.task}${t.running ? html` <${Badge} value="SENT" text="running" />` : ""}</th>
              <td><${Time} value=${t.nextDue} /></td><td><${Time} value=${t.lastRunAt} empty="never" /></td>
              <td><${Time} value=${t.lastOkAt} empty="never" /></td><td>${t.status ?? html`<span class="muted">not run</span>`}${t.lastError ? html` <span class="muted">(${t.lastError})</span>` : ""}</td><td class="n"><${Num} value=${t.consecutiveFailures} unit="runs" digits=${0} /></td></tr>`,
          )}</tbody></table></div>`}
      <h3>Load profile, last 7 days</h3>
      ${d.loadProfileLedger.length === 0
        ? html`<${Empty}>No load profile read yet.<//>`
        : html`<div class="table-wrap"><table><thead><tr><th scope="col">Day (UTC)</th><th scope="col" class="n">Expected</th><th scope="col" class="n">Received</th><th scope="col" class="n">Absent</th><th scope="col" class="n">Missing</th></tr></thead>
          <tbody>${d.loadProfileLedger.map(
            (l) => html`<tr><th scope="row">${l.day}</th><td class="n"><${Num} value=${l.expected} unit="intervals" digits=${0} /></td>
              <td class="n"><${Num} value=${l.received} unit="intervals" digits=${0} /></td><td class="n"><${Num} value=${l.absent} unit="intervals" digits=${0} /></td>
              <td class="n"><${Num} value=${l.missing} unit="intervals" digits=${0} /></td></tr>`,
          )}</tbody></table></div>`}
      <h3>Meter event log</h3>
      ${d.meterLogEvents.length === 0
        ? html`<${Empty}>No event read from the meter's logs yet.<//>`
        : html`<ul class="plain-list">${d.meterLogEvents.map(
            (e) => html`<li><${Time} value=${e.at} /> · <strong>${e.kind.replace(/_/g, " ").toLowerCase()}</strong> <span class="muted">(code ${e.code}, log ${e.log})</span></li>`,
          )}</ul>`}
    </div>`;
  }}<//>`;
}

function CommandResult({ command }) {
  const r = command.result;
  if (command.status === "FAILED") return html`<span>${command.reason}</span>`;
  if (!r) return html`<span class="muted">—</span>`;
  const parts = [];
  if (r.relayConnected !== null) parts.push(html`<span>relay ${r.relayConnected ? "connected" : "disconnected"}</span>`);
  if (r.clockAfter) parts.push(html`<span>clock <${Time} value=${r.clockAfter} /></span>`);
  for (const v of r.values) parts.push(html`<span title=${v.obis}><${Quantity} value=${v.value} unit=${v.unit} /></span>`);
  return html`<span class="result-list">${parts}</span>`;
}

const FINAL = new Set(["CONFIRMED", "FAILED"]);

function RemoteCommands({ id, me, meter, onFinished }) {
  const list = useQuery(COMMANDS, { id }, [id]);
  const [asking, setAsking] = useState(null);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState(null);
  const [announce, setAnnounce] = useState("");
  const [quantities, setQuantities] = useState(READ_QUANTITIES);
  const watching = useRef(new Set());
  const offered = Object.entries(ACTIONS).filter(([, a]) => may(me, a.door));

  function merge(command) {
    list.setData((data) => {
      const items = (data && data.remoteCommands) || [];
      const known = items.some((c) => c.id === command.id);
      return { remoteCommands: known ? items.map((c) => (c.id === command.id ? command : c)) : [command, ...items] };
    });
  }
  async function watch(commandId) {
    if (watching.current.has(commandId)) return;
    watching.current.add(commandId);
    const until = Date.now() + 120000;
    while (watching.current.has(commandId) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 1000));
      try {
        const data = await gql(ONE_COMMAND, { id: commandId });
        if (data.remoteCommand) {
          merge(data.remoteCommand);
          if (FINAL.has(data.remoteCommand.status)) {
            setAnnounce(`${data.remoteCommand.kind.replace(/_/g, " ").toLowerCase()} ${data.remoteCommand.status.toLowerCase()}`);
            onFinished();
            break;
          }
        }
      } catch (e) {
        setProblem(e);
        break;
      }
    }
    watching.current.delete(commandId);
  }
  useEffect(() => {
    const pending = ((list.data && list.data.remoteCommands) || []).filter((c) => !FINAL.has(c.status));
    pending.forEach((c) => watch(c.id));
  }, [list.data && list.data.remoteCommands.length]);
  useEffect(() => () => watching.current.clear(), []);

  async function confirm() {
    const action = ACTIONS[asking];
    setBusy(true);
    setProblem(null);
    try {
      const data = await gql(action.mutation, { id, key: newKey(asking), q: quantities });
      const result = Object.values(data)[0];
      if (result.__typename === "RemoteCommand") {
        merge(result);
        setAnnounce(`${action.label} requested`);
        watch(result.id);
        setAsking(null);
      } else {
        setProblem(result);
        setAsking(null);
      }
    } catch (e) {
      setProblem(e);
      setAsking(null);
    }
    setBusy(false);
  }
  const action = asking && ACTIONS[asking];
  return html`<div>
    ${offered.length > 0 &&
    html`<div class="command-buttons" role="group" aria-label="Remote commands">
      ${offered.map(
        ([key, a]) => html`<button type="button" class=${a.danger ? "danger" : "secondary"} onClick=${() => setAsking(key)}
          disabled=${meter.status === "DECOMMISSIONED"}>${a.label}…</button>`,
      )}
    </div>`}
    <${Announcer} message=${announce} />
    ${problem && html`<${ErrorBox} error=${problem} />`}
    <${Loaded} result=${list} what="Loading remote commands">${(data) =>
      !data.remoteCommands.length
        ? html`<${Empty}>No remote command sent to this meter yet.<//>`
        : html`<div class="table-wrap"><table class="commands">
            <caption class="sr-only">Remote commands, newest first</caption>
            <thead><tr><th scope="col">Command</th><th scope="col">Status</th><th scope="col">Requested</th><th scope="col">By</th><th scope="col" class="n">Attempt</th><th scope="col">Finished</th><th scope="col">Result</th></tr></thead>
            <tbody>${data.remoteCommands.map(
              (c) => html`<tr data-command=${c.id} data-status=${c.status}>
                <th scope="row">${c.kind.replace(/_/g, " ").toLowerCase()}</th>
                <td><${Badge} value=${c.status} />${!FINAL.has(c.status) ? html` <span class="spinner" aria-hidden="true"></span>` : ""}</td>
                <td><${Time} value=${c.requestedAt} /></td><td>${c.requestedBy}</td>
                <td class="n">${c.attempt}</td><td><${Time} value=${c.finishedAt} /></td>
                <td><${CommandResult} command=${c} /></td></tr>`,
            )}</tbody></table></div>`}<//>
    <${ConfirmDialog} open=${Boolean(action)} title=${action ? action.title : ""} confirmLabel=${action ? action.label : ""}
      danger=${action && action.danger} busy=${busy} onCancel=${() => setAsking(null)} onConfirm=${confirm}
      body=${action && html`<p>Meter <strong>${meter.serial}</strong> (${meter.region}, ${meter.customerAccount || "no customer"}).</p>
        <p>${action.body}</p>
        ${asking === "read" &&
        html`<fieldset class="checks"><legend>Quantities</legend>${READ_QUANTITIES.map(
          (q) => html`<label><input type="checkbox" checked=${quantities.includes(q)}
            onChange=${(e) => setQuantities(e.target.checked ? [...quantities, q] : quantities.filter((x) => x !== q))} /> ${label(q)}</label>`,
        )}</fieldset>`}`} />
  </div>`;
}

function day(offset) {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  d.setDate(d.getDate() + offset);
  return d;
}

function isoDay(d) {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

function Intervals({ meter }) {
  const [date, setDate] = useState(isoDay(day(-1)));
  const [state, setState] = useState({ data: null, loading: false, error: null });
  const range = () => {
    const from = new Date(`${date}T00:00:00`);
    const to = new Date(from.getTime() + 24 * 3600 * 1000);
    return `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}&interval=M15`;
  };
  const path = `/api/v1/meters/${encodeURIComponent(meter.id)}/intervals`;
  async function load() {
    setState({ data: null, loading: true, error: null });
    const response = await rest(`${path}?${range()}`);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) setState({ data: null, loading: false, error: { message: body.detail || `HTTP ${response.status}` } });
    else setState({ data: body, loading: false, error: null });
  }
  async function download() {
    const response = await rest(`${path}?${range()}&format=csv`, { headers: { Accept: "text/csv" } });
    if (!response.ok) {
      setState((s) => ({ ...s, error: { message: `CSV export failed: HTTP ${response.status}` } }));
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = `${meter.serial}-intervals-${date}.csv`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
  useEffect(() => {
    load();
  }, [date, meter.id]);
  const total = state.data ? state.data.intervals.reduce((a, i) => a + (i.consumptionWh || 0), 0) : 0;
  return html`<div>
    <form class="inline-form" onSubmit=${(e) => e.preventDefault()}>
      <div class="field"><label for="iv-day">Day (your time zone)</label>
        <input id="iv-day" type="date" value=${date} max=${isoDay(day(0))} onChange=${(e) => setDate(e.target.value)} /></div>
      <button type="button" class="secondary" onClick=${download}>Download CSV</button>
    </form>
    ${state.error && html`<${ErrorBox} error=${state.error} />`}
    ${state.loading && html`<${Loading} what="Loading intervals" />`}
    ${state.data &&
    html`<p class="muted">Total <${Num} value=${total / 1000} unit="kWh" digits=${3} /> on ${date}; ${state.data.intervals.filter((i) => i.quality !== "missing").length} of ${state.data.intervals.length} quarter-hours have readings.</p>
      <details><summary>Quarter-hours</summary><div class="table-wrap"><table>
        <thead><tr><th scope="col">From</th><th scope="col">To</th><th scope="col" class="n">Energy</th><th scope="col">Quality</th><th scope="col" class="n">Readings</th></tr></thead>
        <tbody>${state.data.intervals.map(
          (i) => html`<tr><td><${Time} value=${i.start} style="short" /></td><td><${Time} value=${i.end} style="short" /></td>
            <td class="n">${i.consumptionWh === null ? html`<span class="muted">—</span>` : html`<${Num} value=${i.consumptionWh / 1000} unit="kWh" digits=${3} />`}</td>
            <td>${i.quality}</td><td class="n"><${Num} value=${i.readings} unit="readings" digits=${0} /></td></tr>`,
        )}</tbody></table></div></details>`}
  </div>`;
}

export function MeterPage({ me, id, customer }) {
  const result = useQuery(METER, { id }, [id]);
  const [refresh, setRefresh] = useState(0);
  const staff = may(me, "Query.meterDlmsState");
  return html`<div class="page meter">
    <p class="crumbs"><a href="#/meters">${customer ? "My meters" : "Meters"}</a> ›</p>
    <${Loaded} result=${result} what="Loading the meter">${(data) => {
      const meter = data.meter;
      if (!meter) return html`<h1>Meter not found</h1><${Empty}>No meter with id <code>${id}</code> that you may see.<//>`;
      return html`
        <div class="page-head"><h1>Meter ${meter.serial}</h1><${Badge} value=${meter.status} /> <${Reach} meter=${meter} /></div>
        <div class="two">
          <${Card} title="Meter" id="meter-facts"><${Facts} meter=${meter} /><//>
          <${Card} title="Latest values" id="meter-latest"><${Latest} id=${meter.id} /><//>
        </div>
        <${Card} title="Consumption" id="meter-consumption"><${Consumption} id=${meter.id} /><//>
        ${staff && html`<${Card} title="Remote commands" id="meter-commands">
          <${RemoteCommands} id=${meter.id} me=${me} meter=${meter} onFinished=${() => setRefresh((n) => n + 1)} /><//>`}
        ${staff && html`<${Card} title="DLMS" id="meter-dlms"><${Dlms} id=${meter.id} refresh=${refresh} /><//>`}
        ${may(me, "GET /api/v1/meters/{meter}/intervals") && html`<${Card} title="Billing intervals" id="meter-intervals"><${Intervals} meter=${meter} /><//>`}
        ${may(me, "Query.history")
          ? html`<${Card} title="History: who did what, when" id="meter-history"><${History} id=${meter.id} /><//>`
          : !customer && html`<${Card} title="History" id="meter-history"><p class="muted">The event history (every change with its actor) is open to auditors and admins.</p><//>`}
      `;
    }}<//>
  </div>`;
}
