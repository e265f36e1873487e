// Meters: search (serial, region, area, status, customer), paging, registration; one meter's
// page when the URL names it (#/meters/<id>).
import { html, useState, useEffect, useMemo } from "../lib/html.js";
import { gql } from "../lib/graphql.js";
import { may } from "../lib/session.js";
import { href, go } from "../lib/router.js";
import { Ago } from "../lib/format.js";
import { Card, Loading, ErrorBox, Empty, Badge, Reach, Dialog, Field, fieldErrors, newKey, Announcer } from "../lib/ui.js";
import { MeterPage } from "./meter.js";

const LIST = `query($filter: MeterFilterInput, $first: Int!, $after: String) {
  meters(filter: $filter, first: $first, after: $after) {
    edges { node { id serial status region area customerAccount online lastSeen manufacturer model
                   connection { host port } } }
    pageInfo { hasNextPage endCursor } } }`;
const REGISTER = `mutation($input: RegisterMeterInput!, $key: String) {
  registerMeter(input: $input, idempotencyKey: $key) {
    __typename ... on Meter { id serial }
    ... on ValidationError { code message fields { field rule message } } ... on Error { code message } } }`;

const STATUSES = ["REGISTERED", "COMMISSIONED", "DECOMMISSIONED"];
const PAGE_SIZES = [25, 50, 100];

function filterOf(params) {
  return {
    serial: params.get("serial") || "",
    region: params.get("region") || "",
    area: params.get("area") || "",
    status: STATUSES.includes(params.get("status")) ? params.get("status") : "",
    customer: params.get("customer") || "",
    size: PAGE_SIZES.includes(Number(params.get("size"))) ? Number(params.get("size")) : 25,
  };
}

function Search({ filter, customer }) {
  const [draft, setDraft] = useState(filter);
  useEffect(() => setDraft(filter), [JSON.stringify(filter)]);
  const set = (name) => (e) => setDraft({ ...draft, [name]: e.target.value });
  function submit(event) {
    event.preventDefault();
    const trimmed = Object.fromEntries(Object.entries(draft).map(([k, v]) => [k, typeof v === "string" ? v.trim() : v]));
    go("meters", [], trimmed);
  }
  return html`<form class="filters" role="search" aria-label="Find meters" onSubmit=${submit}>
    <div class="field"><label for="mf-serial">Serial starts with</label>
      <input id="mf-serial" value=${draft.serial} onInput=${set("serial")} autocomplete="off" /></div>
    <div class="field"><label for="mf-region">Region</label><input id="mf-region" value=${draft.region} onInput=${set("region")} /></div>
    <div class="field"><label for="mf-area">Area</label><input id="mf-area" value=${draft.area} onInput=${set("area")} /></div>
    <div class="field"><label for="mf-status">Status</label>
      <select id="mf-status" value=${draft.status} onChange=${set("status")}>
        <option value="">any</option>${STATUSES.map((s) => html`<option value=${s}>${s.toLowerCase()}</option>`)}
      </select></div>
    ${!customer && html`<div class="field"><label for="mf-customer">Customer account</label>
      <input id="mf-customer" value=${draft.customer} onInput=${set("customer")} /></div>`}
    <div class="field"><label for="mf-size">Per page</label>
      <select id="mf-size" value=${draft.size} onChange=${(e) => setDraft({ ...draft, size: Number(e.target.value) })}>
        ${PAGE_SIZES.map((n) => html`<option value=${n}>${n}</option>`)}
      </select></div>
    <div class="form-actions">
      <button type="submit" class="primary">Search</button>
      <a class="button secondary" href="#/meters">Clear</a>
    </div>
  </form>`;
}

const BLANK = {
  serial: "", manufacturer: "", model: "", firmware: "", phases: "1", region: "", area: "",
  host: "", port: "4059", transport: "WRAPPER", security: "NONE", clientAddress: "16",
  serverAddress: "1", physicalAddress: "", meterType: "", concentratorId: "", simCard: "",
};

function inputOf(form) {
  const optional = (v) => (v.trim() ? v.trim() : null);
  const connection = {
    host: form.host.trim(),
    port: Number(form.port),
    transport: form.transport,
    security: form.security,
    clientAddress: Number(form.clientAddress),
    serverAddress: Number(form.serverAddress),
  };
  if (form.transport === "HDLC" && form.physicalAddress.trim()) connection.physicalAddress = Number(form.physicalAddress);
  return {
    serial: form.serial.trim(), manufacturer: form.manufacturer.trim(), model: form.model.trim(),
    firmware: form.firmware.trim(), phases: Number(form.phases), region: form.region.trim(),
    area: form.area.trim(), connection, meterType: optional(form.meterType),
    concentratorId: optional(form.concentratorId), simCard: optional(form.simCard),
  };
}

function RegisterDialog({ open, onClose, onDone }) {
  const [form, setForm] = useState(BLANK);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState(null);
  const [key, setKey] = useState(newKey("register"));
  useEffect(() => {
    if (open) {
      setProblem(null);
      setKey(newKey("register"));
    }
  }, [open]);
  const errors = fieldErrors(problem);
  const set = (name) => (e) => setForm({ ...form, [name]: e.target.value });
  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setProblem(null);
    try {
      const data = await gql(REGISTER, { input: inputOf(form), key });
      const result = data.registerMeter;
      if (result.__typename === "Meter") {
        setForm(BLANK);
        onDone(result);
      } else setProblem(result);
    } catch (e) {
      setProblem(e);
    }
    setBusy(false);
  }
  const text = (name, label, props = {}) => html`<${Field} label=${label} name=${`reg-${name}`} error=${errors[name] || errors[`connection.${name}`]}>
    ${(id, described) => html`<input id=${id} value=${form[name]} onInput=${set(name)} aria-describedby=${described}
      aria-invalid=${Boolean(errors[name] || errors[`connection.${name}`])} ...${props} />`}
  <//>`;
  const choice = (name, label, options) => html`<${Field} label=${label} name=${`reg-${name}`} error=${errors[name] || errors[`connection.${name}`]}>
    ${(id, described) => html`<select id=${id} value=${form[name]} onChange=${set(name)} aria-describedby=${described}>
      ${options.map(([v, t]) => html`<option value=${v}>${t}</option>`)}</select>`}
  <//>`;
  const unplaced = problem && problem.fields ? problem.fields.filter((f) => !(f.field in BLANK) && !(f.field.replace("connection.", "") in BLANK)) : [];
  return html`<${Dialog} open=${open} onClose=${onClose} title="Register a meter" id="register">
    <form onSubmit=${submit} class="grid-form" novalidate>
      <fieldset><legend>Meter</legend>
        ${text("serial", "Serial number", { required: true, autocomplete: "off" })}
        ${text("manufacturer", "Manufacturer", { required: true })}
        ${text("model", "Model", { required: true })}
        ${text("firmware", "Firmware", { required: true })}
        ${choice("phases", "Phases", [["1", "1 phase"], ["3", "3 phases"]])}
        ${text("meterType", "Meter type (optional)")}
      </fieldset>
      <fieldset><legend>Place</legend>
        ${text("region", "Region", { required: true })}
        ${text("area", "Area", { required: true })}
        ${text("concentratorId", "Concentrator (optional)")}
        ${text("simCard", "SIM card (optional)")}
      </fieldset>
      <fieldset><legend>Connection (DLMS)</legend>
        ${text("host", "Host or IP address", { required: true })}
        ${text("port", "TCP port", { inputmode: "numeric" })}
        ${choice("transport", "Transport", [["WRAPPER", "wrapper (IEC 62056-47)"], ["HDLC", "HDLC (IEC 62056-46)"]])}
        ${choice("security", "Security", [["NONE", "none (public client)"], ["LLS", "LLS password"], ["HLS_GMAC", "HLS-GMAC"]])}
        ${text("clientAddress", "Client address", { inputmode: "numeric" })}
        ${text("serverAddress", "Server address", { inputmode: "numeric" })}
        ${form.transport === "HDLC" && text("physicalAddress", "Physical address", { inputmode: "numeric" })}
      </fieldset>
      ${problem && (!problem.fields || unplaced.length > 0) && html`<${ErrorBox} error=${problem} />`}
      <div class="dialog-actions">
        <button type="button" class="secondary" onClick=${onClose}>Cancel</button>
        <button type="submit" class="primary" disabled=${busy}>${busy ? "Registering…" : "Register meter"}</button>
      </div>
    </form>
  <//>`;
}

function MeterList({ me, route, customer }) {
  const filter = useMemo(() => filterOf(route.params), [route.params.toString()]);
  const [cursors, setCursors] = useState([null]);
  const [index, setIndex] = useState(0);
  const [state, setState] = useState({ data: null, loading: true, error: null });
  const [registering, setRegistering] = useState(false);
  const [notice, setNotice] = useState(route.params.get("registered") ? `Meter ${route.params.get("registered")} registered.` : "");
  useEffect(() => {
    setCursors([null]);
    setIndex(0);
  }, [JSON.stringify(filter)]);
  useEffect(() => {
    let live = true;
    const variables = {
      first: filter.size,
      after: cursors[index] || null,
      filter: {
        serialPrefix: filter.serial || null,
        region: filter.region || null,
        area: filter.area || null,
        status: filter.status || null,
        customerAccount: filter.customer || null,
      },
    };
    setState((s) => ({ ...s, loading: true, error: null }));
    gql(LIST, variables).then(
      (data) => live && setState({ data: data.meters, loading: false, error: null }),
      (error) => live && setState({ data: null, loading: false, error }),
    );
    return () => {
      live = false;
    };
  }, [JSON.stringify(filter), index, cursors[index]]);
  function next() {
    const end = state.data.pageInfo.endCursor;
    setCursors((c) => [...c.slice(0, index + 1), end]);
    setIndex(index + 1);
  }
  const rows = state.data ? state.data.edges.map((e) => e.node) : [];
  return html`<div class="page meters">
    <div class="page-head">
      <h1>${customer ? "My meters" : "Meters"}</h1>
      ${may(me, "Mutation.registerMeter") && html`<button type="button" class="primary" onClick=${() => setRegistering(true)}>Register meter</button>`}
    </div>
    <${Announcer} message=${notice} />
    ${notice && html`<p class="state notice">${notice}</p>`}
    <${Card} title="Search" id="meter-search"><${Search} filter=${filter} customer=${customer} /><//>
    <${Card} title="Results" id="meter-results">
      ${state.error && html`<${ErrorBox} error=${state.error} />`}
      ${state.loading && !state.data && html`<${Loading} what="Loading meters" />`}
      ${state.data && !rows.length && html`<${Empty}>No meter matches this search.<//>`}
      ${rows.length > 0 &&
      html`<div class="table-wrap"><table class="meter-table" aria-busy=${state.loading}>
        <caption class="sr-only">Meters ordered by serial number</caption>
        <thead><tr>
          <th scope="col">Serial</th><th scope="col">Status</th><th scope="col">Reachability</th>
          <th scope="col">Last reading</th><th scope="col">Region</th><th scope="col">Area</th>
          <th scope="col">Customer</th><th scope="col">Meter</th><th scope="col">Address</th>
        </tr></thead>
        <tbody>${rows.map(
          (m) => html`<tr>
            <th scope="row"><a href=${href("meters", [m.id])}>${m.serial}</a></th>
            <td><${Badge} value=${m.status} /></td>
            <td><${Reach} meter=${m} /></td>
            <td><${Ago} value=${m.lastSeen} /></td>
            <td>${m.region}</td><td>${m.area}</td>
            <td>${m.customerAccount || html`<span class="muted">none</span>`}</td>
            <td>${m.manufacturer} ${m.model}</td>
            <td><code>${m.connection.host}:${m.connection.port}</code></td>
          </tr>`,
        )}</tbody>
      </table></div>`}
      ${state.data &&
      html`<nav class="pager" aria-label="Result pages">
        <button type="button" class="secondary" disabled=${index === 0 || state.loading} onClick=${() => setIndex(index - 1)}>Previous page</button>
        <span>Page ${index + 1}</span>
        <button type="button" class="secondary" disabled=${!state.data.pageInfo.hasNextPage || state.loading} onClick=${next}>Next page</button>
      </nav>`}
    <//>
    <${RegisterDialog} open=${registering} onClose=${() => setRegistering(false)}
      onDone=${(m) => { setRegistering(false); setNotice(`Meter ${m.serial} registered.`); go("meters", [], { serial: m.serial, registered: m.serial }); }} />
  </div>`;
}

export function Meters(props) {
  if (props.route.rest.length) return html`<${MeterPage} ...${props} id=${props.route.rest[0]} />`;
  return html`<${MeterList} ...${props} />`;
}
