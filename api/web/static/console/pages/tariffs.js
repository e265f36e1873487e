// Tariffs: each region's price, tier and load; price history; admin overrides with expiry.
import { html, useState, useMemo } from "../lib/html.js";
import { gql } from "../lib/graphql.js";
import { may } from "../lib/session.js";
import { Time, Num, Price as Money, formatNumber } from "../lib/format.js";
import { Chart } from "../lib/chart.js";
import { useQuery, useSubscription, Loaded, Card, Empty, ErrorBox, Badge, Field, fieldErrors, newKey, Announcer } from "../lib/ui.js";

const TARIFF_FIELDS = `region currency basePrice loadPrice effectivePrice loadPct loadBucket timezone minChangePct
  tiers { thresholdPct surchargePct } loadTier { thresholdPct surchargePct }
  override { price reason author expiresAt active } version updatedAt`;
const ALL = `{ tariffs { ${TARIFF_FIELDS} } }`;
const MY_REGIONS = `{ meters(first: 500) { edges { node { region } } } }`;
const CURRENT = `query($region: String!) { currentTariff(region: $region) { ${TARIFF_FIELDS} } }`;
const HISTORY = `query($region: String!, $from: DateTime!, $to: DateTime!) {
  tariffHistory(region: $region, from: $from, to: $to) { at price kind loadPct } }`;
const CHANGED = `subscription($region: String!) { tariffChanged(region: $region) { ${TARIFF_FIELDS} } }`;
const RESULT = `__typename ... on Tariff { ${TARIFF_FIELDS} }
  ... on ValidationError { code message fields { field rule message } } ... on Error { code message }`;
const OVERRIDE = `mutation($region: String!, $price: String!, $reason: String!, $expiresAt: DateTime!, $key: String) {
  applyTariffOverride(region: $region, price: $price, reason: $reason, expiresAt: $expiresAt, idempotencyKey: $key) { ${RESULT} } }`;
const CLEAR = `mutation($region: String!, $reason: String!, $key: String) {
  clearTariffOverride(region: $region, reason: $reason, idempotencyKey: $key) { ${RESULT} } }`;
const PERIODS = { "24h": ["24 hours", 24], "7d": ["7 days", 168], "30d": ["30 days", 720] };

function Price({ tariff, value }) {
  return html`<${Money} value=${value} currency=${tariff.currency} />`;
}

function TierText({ tariff }) {
  if (tariff.override && tariff.override.active) return html`<${Badge} value="HIGH" text="override" />`;
  if (!tariff.loadTier) return html`base price`;
  return html`+${formatNumber(Number(tariff.loadTier.surchargePct), 2)} % from ${formatNumber(tariff.loadTier.thresholdPct, 0)} % load`;
}

function TariffTable({ tariffs, selected }) {
  return html`<div class="table-wrap"><table>
    <caption class="sr-only">Tariff of every region</caption>
    <thead><tr><th scope="col">Region</th><th scope="col" class="n">Price now</th><th scope="col">Tier</th>
      <th scope="col" class="n">Load</th><th scope="col" class="n">Base price</th><th scope="col">Override</th><th scope="col">Updated</th></tr></thead>
    <tbody>${tariffs.map(
      (t) => html`<tr class=${t.region === selected ? "selected" : ""}>
        <th scope="row"><a href=${`#/tariffs?region=${encodeURIComponent(t.region)}`} aria-current=${t.region === selected ? "true" : undefined}>${t.region}</a></th>
        <td class="n"><${Price} tariff=${t} value=${t.effectivePrice} /></td>
        <td><${TierText} tariff=${t} /></td>
        <td class="n">${t.loadPct === null ? html`<span class="muted">—</span>` : html`<${Num} value=${t.loadPct} unit="%" digits=${1} />`}</td>
        <td class="n"><${Price} tariff=${t} value=${t.basePrice} /></td>
        <td>${t.override ? html`<${Price} tariff=${t} value=${t.override.price} /> ${t.override.active ? html`until <${Time} value=${t.override.expiresAt} />` : html`<span class="muted">(expired)</span>`}` : html`<span class="muted">none</span>`}</td>
        <td><${Time} value=${t.updatedAt} /></td>
      </tr>`,
    )}</tbody></table></div>`;
}

function History({ tariff }) {
  const [period, setPeriod] = useState("24h");
  const span = useMemo(() => {
    const to = new Date(Date.now() + 60000);
    return { from: new Date(to.getTime() - PERIODS[period][1] * 3600 * 1000).toISOString(), to: to.toISOString() };
  }, [period, tariff.version]);
  const result = useQuery(HISTORY, { region: tariff.region, ...span }, [tariff.region, period, tariff.version]);
  const rows = result.data ? result.data.tariffHistory : [];
  const chart = useMemo(() => {
    if (!rows.length) return null;
    const times = rows.map((r) => new Date(r.at));
    const values = rows.map((r) => Number(r.price));
    times.push(new Date());
    values.push(Number(tariff.effectivePrice));
    return { times, series: [{ label: "Price", unit: `${tariff.currency}/kWh`, values, kind: "step" }] };
  }, [result.data]);
  const range = useMemo(() => [new Date(span.from), new Date(span.to)], [span]);
  return html`<div>
    <div class="segmented" role="group" aria-label="Period">${Object.entries(PERIODS).map(
      ([key, [text]]) => html`<button type="button" class=${key === period ? "primary" : "secondary"} aria-pressed=${key === period} onClick=${() => setPeriod(key)}>${text}</button>`,
    )}</div>
    <${Loaded} result=${result} what="Loading the price history">${() =>
      !rows.length
        ? html`<${Empty}>No price recorded for ${tariff.region} in the last ${PERIODS[period][0]}.<//>`
        : html`<${Chart} times=${chart.times} series=${chart.series} range=${range} caption=${`Price in ${tariff.region}, last ${PERIODS[period][0]}`} id="tariff-chart" />
          <details><summary>${rows.length} recorded price${rows.length === 1 ? "" : "s"}</summary><div class="table-wrap"><table>
            <thead><tr><th scope="col">At</th><th scope="col" class="n">Price</th><th scope="col">Why</th><th scope="col" class="n">Load</th></tr></thead>
            <tbody>${[...rows].reverse().map(
              (r) => html`<tr><td><${Time} value=${r.at} /></td><td class="n"><${Price} tariff=${tariff} value=${r.price} /></td><td>${r.kind}</td>
                <td class="n">${r.loadPct === null ? html`<span class="muted">—</span>` : html`<${Num} value=${r.loadPct} unit="%" digits=${1} />`}</td></tr>`,
            )}</tbody></table></div></details>`}<//>
  </div>`;
}

function localInput(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function OverrideForm({ tariff, onDone }) {
  const [price, setPrice] = useState(tariff.basePrice);
  const [reason, setReason] = useState("");
  const [expires, setExpires] = useState(localInput(new Date(Date.now() + 2 * 3600 * 1000)));
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState(null);
  const errors = fieldErrors(problem);
  async function run(mutation, variables) {
    setBusy(true);
    setProblem(null);
    try {
      const data = await gql(mutation, { ...variables, key: newKey("override") });
      const result = Object.values(data)[0];
      if (result.__typename === "Tariff") {
        onDone(result);
        setReason("");
      } else setProblem(result);
    } catch (e) {
      setProblem(e);
    }
    setBusy(false);
  }
  function apply(event) {
    event.preventDefault();
    run(OVERRIDE, { region: tariff.region, price: price.trim(), reason: reason.trim(), expiresAt: new Date(expires).toISOString() });
  }
  return html`<form class="grid-form" onSubmit=${apply} aria-label=${`Override the price of ${tariff.region}`}>
    <${Field} label=${`Price (${tariff.currency}/kWh)`} name="ov-price" error=${errors.price}>
      ${(id, d) => html`<input id=${id} inputmode="decimal" required value=${price} aria-describedby=${d} onInput=${(e) => setPrice(e.target.value)} />`}<//>
    <${Field} label="Expires (your time zone)" name="ov-expires" error=${errors.expiresAt || errors.expires_at}>
      ${(id, d) => html`<input id=${id} type="datetime-local" required value=${expires} aria-describedby=${d} onInput=${(e) => setExpires(e.target.value)} />`}<//>
    <${Field} label="Reason" name="ov-reason" error=${errors.reason}>
      ${(id, d) => html`<input id=${id} required maxlength="500" value=${reason} aria-describedby=${d} onInput=${(e) => setReason(e.target.value)} />`}<//>
    ${problem && !Object.keys(errors).length && html`<${ErrorBox} error=${problem} />`}
    ${problem && Object.keys(errors).length > 0 && html`<p class="field-error" role="alert">${problem.message}</p>`}
    <div class="form-actions">
      <button type="submit" class="primary" disabled=${busy || !reason.trim()}>Apply override</button>
      ${tariff.override && tariff.override.active &&
      html`<button type="button" class="secondary" disabled=${busy || !reason.trim()}
        onClick=${() => run(CLEAR, { region: tariff.region, reason: reason.trim() })}>Clear override (reason above)</button>`}
    </div>
  </form>`;
}

function Region({ tariff, me, onChange }) {
  const [announce, setAnnounce] = useState("");
  const liveError = useSubscription(CHANGED, { region: tariff.region }, (d) => {
    onChange(d.tariffChanged);
    setAnnounce(`Price in ${tariff.region} is now ${d.tariffChanged.effectivePrice} ${tariff.currency}/kWh`);
  }, [tariff.region]);
  return html`<div>
    <${Announcer} message=${announce} />
    ${liveError && html`<${ErrorBox} error=${liveError} />`}
    <div class="stats">
      <div class="stat"><div class="stat-label">Price now</div><div class="stat-value"><${Price} tariff=${tariff} value=${tariff.effectivePrice} /></div>
        <div class="stat-hint">load price <${Price} tariff=${tariff} value=${tariff.loadPrice} /></div></div>
      <div class="stat"><div class="stat-label">Tier</div><div class="stat-value small-value"><${TierText} tariff=${tariff} /></div>
        <div class="stat-hint">${tariff.tiers.map((t) => `${formatNumber(t.thresholdPct, 0)} % → +${formatNumber(Number(t.surchargePct), 2)} %`).join(", ")}</div></div>
      <div class="stat"><div class="stat-label">Load</div><div class="stat-value">${tariff.loadPct === null ? "—" : html`<${Num} value=${tariff.loadPct} unit="%" digits=${1} />`}</div>
        <div class="stat-hint">${tariff.loadBucket ? html`window <${Time} value=${tariff.loadBucket} style="short" />` : "no load recorded"}</div></div>
    </div>
    ${tariff.override && html`<p>Override <${Price} tariff=${tariff} value=${tariff.override.price} /> by ${tariff.override.author} (“${tariff.override.reason}”), ${tariff.override.active ? "until" : "expired"} <${Time} value=${tariff.override.expiresAt} />.</p>`}
    ${may(me, "Query.tariffHistory") && html`<h3>Price history</h3><${History} tariff=${tariff} />`}
    ${may(me, "Mutation.applyTariffOverride") && html`<h3>Override</h3><${OverrideForm} tariff=${tariff} onDone=${(t) => { onChange(t); setAnnounce(`Override saved for ${t.region}`); }} />`}
  </div>`;
}

function StaffTariffs({ me, route }) {
  const result = useQuery(ALL, {}, []);
  const selected = route.params.get("region");
  function replace(tariff) {
    result.setData((d) => ({ tariffs: d.tariffs.map((t) => (t.region === tariff.region ? tariff : t)) }));
  }
  return html`<${Loaded} result=${result} what="Loading tariffs">${(data) => {
    if (!data.tariffs.length) return html`<${Empty}>No region has a tariff yet (an admin creates one with createTariff).<//>`;
    const current = data.tariffs.find((t) => t.region === selected) || data.tariffs[0];
    return html`
      <${Card} title="Regions" id="tariff-regions"><${TariffTable} tariffs=${data.tariffs} selected=${current.region} /><//>
      <${Card} title=${`Tariff of ${current.region}`} id="tariff-region"><${Region} tariff=${current} me=${me} onChange=${replace} /><//>`;
  }}<//>`;
}

function CustomerTariff({ region, me }) {
  const result = useQuery(CURRENT, { region }, [region]);
  return html`<${Loaded} result=${result} what="Loading the tariff">${(data) =>
    !data.currentTariff
      ? html`<${Empty}>No tariff for ${region}.<//>`
      : html`<${Card} title=${`Tariff of ${region}`} id=${`tariff-${region}`}>
          <${Region} tariff=${data.currentTariff} me=${me} onChange=${(t) => result.setData(() => ({ currentTariff: t }))} /><//>`}<//>`;
}

function CustomerTariffs({ me }) {
  const result = useQuery(MY_REGIONS, {}, []);
  return html`<${Loaded} result=${result} what="Loading your meters">${(data) => {
    const regions = [...new Set(data.meters.edges.map((e) => e.node.region))];
    if (!regions.length) return html`<${Empty}>No meter is assigned to your account.<//>`;
    return regions.map((r) => html`<${CustomerTariff} region=${r} me=${me} />`);
  }}<//>`;
}

export function Tariffs({ me, route, customer }) {
  return html`<div class="page tariffs">
    <div class="page-head"><h1>${customer ? "My tariff" : "Tariffs"}</h1>
      <p class="muted">Prices per kWh follow each region's load; changes appear here as they are recorded.</p></div>
    ${may(me, "Query.tariffs") ? html`<${StaffTariffs} me=${me} route=${route} />` : html`<${CustomerTariffs} me=${me} />`}
  </div>`;
}
