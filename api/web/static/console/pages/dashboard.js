// Dashboard: reachability, reading counts, open alerts, regional load and tariff — live.
import { html, useState, useEffect, useRef } from "../lib/html.js";
import { gql } from "../lib/graphql.js";
import { useSubscription, Card, Stat, Loading, ErrorBox, Badge, Empty } from "../lib/ui.js";
import { Time, Num, Price, formatNumber, localTime, utc } from "../lib/format.js";
import { href } from "../lib/router.js";
import { ALERT_FIELDS } from "./alerts.js";

const FIELDS = `
  at
  meters { active online offline neverSeen decommissioned }
  readings { windowStart thisWindow lastWindow }
  openAlerts { severity open acknowledged }
  regions {
    region capacityKw loadBucket powerKw loadPct
    meters { active online offline neverSeen }
    tariff { currency effectivePrice basePrice loadTier { thresholdPct surchargePct }
             override { price expiresAt active } }
  }`;
const QUERY = `{ dashboard { ${FIELDS} } }`;
const LIVE = `subscription { dashboard(everySeconds: 5) { ${FIELDS} } }`;
const RAISED = `subscription { alertRaised { ${ALERT_FIELDS} } }`;

function percent(part, whole) {
  return whole ? (100 * part) / whole : 0;
}

function firstData() {
  if (!performance.getEntriesByName("hes:dashboard:first-data").length) {
    performance.mark("hes:dashboard:first-data");
  }
}

function Reachability({ meters }) {
  return html`<div class="stats" aria-label="Meters">
    <${Stat} label="Online" tone="ok" hint=${`${formatNumber(percent(meters.online, meters.active), 1)} % of ${formatNumber(meters.active, 0)} in service`}>
      <${Num} value=${meters.online} unit="meters" digits=${0} />
    <//>
    <${Stat} label="Offline" tone=${meters.offline ? "bad" : ""} hint="reported before, silent for 15 min">
      <${Num} value=${meters.offline} unit="meters" digits=${0} />
    <//>
    <${Stat} label="Never seen" tone=${meters.neverSeen ? "warn" : ""} hint="in service, no reading yet">
      <${Num} value=${meters.neverSeen} unit="meters" digits=${0} />
    <//>
    <${Stat} label="Decommissioned"><${Num} value=${meters.decommissioned} unit="meters" digits=${0} /><//>
  </div>`;
}

function Readings({ readings }) {
  const start = new Date(readings.windowStart);
  const previous = new Date(start.getTime() - 15 * 60 * 1000);
  return html`<div class="stats" aria-label="Readings">
    <${Stat} label="Readings, last 15 min window" hint=${html`<span title=${`${utc(previous)} – ${utc(start)}`}>${localTime(previous, "short")}–${localTime(start, "short")}</span>`}>
      <${Num} value=${readings.lastWindow} unit="readings" digits=${0} />
    <//>
    <${Stat} label="Readings, this window so far" hint=${html`since <${Time} value=${start} style="short" />`}>
      <${Num} value=${readings.thisWindow} unit="readings" digits=${0} />
    <//>
    <${Stat} label="Rate, last window" hint="readings per minute">
      <${Num} value=${readings.lastWindow / 15} unit="/min" digits=${0} />
    <//>
  </div>`;
}

function AlertTallies({ tallies }) {
  return html`<div class="stats four" aria-label="Open alerts by severity">
    ${tallies.map(
      (t) => html`<${Stat} label=${html`<${Badge} value=${t.severity} />`} tone=${t.open ? (t.severity === "LOW" ? "warn" : "bad") : ""}
          hint=${`${t.acknowledged} acknowledged`}>
        <a href=${href("alerts", [], { severity: t.severity })} class="plain">
          <${Num} value=${t.open + t.acknowledged} unit="open" digits=${0} />
        </a>
      <//>`,
    )}
  </div>`;
}

function LoadBar({ pct }) {
  if (pct === null || pct === undefined) return html`<span class="muted">no load yet</span>`;
  const tone = pct >= 90 ? "bad" : pct >= 80 ? "warn" : "ok";
  return html`<span class="loadbar">
    <span class=${`loadbar-track ${tone}`} aria-hidden="true"><span class="loadbar-fill" style=${`width:${Math.min(100, pct)}%`}></span></span>
    <${Num} value=${pct} unit="%" digits=${1} />
  </span>`;
}

function Tier({ tariff }) {
  if (!tariff) return html`<span class="muted">no tariff</span>`;
  if (tariff.override && tariff.override.active) return html`<${Badge} value="HIGH" text="override" />`;
  if (!tariff.loadTier) return html`<span>base</span>`;
  return html`<span>+${formatNumber(Number(tariff.loadTier.surchargePct), 2)} % (from ${formatNumber(tariff.loadTier.thresholdPct, 0)} % load)</span>`;
}

function Regions({ regions }) {
  if (!regions.length) return html`<${Empty}>No meters registered yet: no regions to show.<//>`;
  return html`<div class="table-wrap"><table class="regions">
    <caption class="sr-only">Load and tariff per region</caption>
    <thead><tr>
      <th scope="col">Region</th><th scope="col">Online</th><th scope="col" class="n">Load</th>
      <th scope="col" class="n">Capacity</th><th scope="col">Load / capacity</th>
      <th scope="col" class="n">Price</th><th scope="col">Tier</th><th scope="col">Window</th>
    </tr></thead>
    <tbody>${regions.map(
      (r) => html`<tr>
        <th scope="row"><a href=${href("meters", [], { region: r.region })}>${r.region}</a></th>
        <td><${Num} value=${r.meters.online} unit=${`/ ${formatNumber(r.meters.active, 0)} meters`} digits=${0} /></td>
        <td class="n">${r.powerKw === null ? html`<span class="muted">—</span>` : html`<${Num} value=${r.powerKw} unit="kW" digits=${1} />`}</td>
        <td class="n"><${Num} value=${r.capacityKw} unit="kW" digits=${0} /></td>
        <td><${LoadBar} pct=${r.loadPct} /></td>
        <td class="n">${r.tariff ? html`<${Price} value=${r.tariff.effectivePrice} currency=${r.tariff.currency} />` : html`<span class="muted">—</span>`}</td>
        <td><${Tier} tariff=${r.tariff} /></td>
        <td>${r.loadBucket ? html`<${Time} value=${r.loadBucket} style="short" />` : html`<span class="muted">—</span>`}</td>
      </tr>`,
    )}</tbody>
  </table></div>`;
}

function Arrivals({ alerts }) {
  if (!alerts.length) return html`<${Empty}>No alert raised since this page opened.<//>`;
  return html`<ul class="feed">${alerts.map(
    (a) => html`<li class="fresh">
      <${Badge} value=${a.severity} /> <strong>${a.type.replace(/_/g, " ")}</strong> in ${a.region}: ${a.message}
      <span class="muted"> · <${Time} value=${a.raisedAt} /></span>
      <a href=${href("alerts", [], { focus: a.id })}>open</a>
    </li>`,
  )}</ul>`;
}

export function Dashboard() {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [arrivals, setArrivals] = useState([]);
  const got = useRef(false);
  function show(snapshot) {
    got.current = true;
    setData(snapshot);
    setError(null);
  }
  useEffect(() => {
    let live = true;
    // The HTTP answer paints the first data; the subscription keeps it current.
    gql(QUERY).then(
      (d) => live && !got.current && show(d.dashboard),
      (e) => live && !got.current && setError(e),
    );
    return () => {
      live = false;
    };
  }, []);
  useEffect(() => {
    if (data) firstData();
  }, [data !== null]);
  const liveError = useSubscription(LIVE, {}, (d) => show(d.dashboard), []);
  useSubscription(RAISED, {}, (d) => setArrivals((list) => [d.alertRaised, ...list].slice(0, 8)), []);
  return html`<div class="page dashboard" data-first-data=${data ? "yes" : "no"}>
    <div class="page-head">
      <h1>Dashboard</h1>
      ${data && html`<p class="muted">As of <${Time} value=${data.at} /> · refreshed every 5 s and on every alert or tariff change</p>`}
    </div>
    ${error && html`<${ErrorBox} error=${error} />`}
    ${liveError && html`<${ErrorBox} error=${liveError} />`}
    ${!data && !error && html`<${Loading} what="Loading the dashboard" />`}
    ${data &&
    html`
      <${Card} title="Meters" id="dash-meters"><${Reachability} meters=${data.meters} /><//>
      <div class="two">
        <${Card} title="Readings" id="dash-readings"><${Readings} readings=${data.readings} /><//>
        <${Card} title="Open alerts" id="dash-alerts"><${AlertTallies} tallies=${data.openAlerts} /><//>
      </div>
      <${Card} title="Regions: load against capacity, tariff" id="dash-regions"><${Regions} regions=${data.regions} /><//>
      <${Card} title="New alerts" id="dash-feed"><${Arrivals} alerts=${arrivals} /><//>
    `}
  </div>`;
}
