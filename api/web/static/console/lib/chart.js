// Time-series charts with uPlot (canvas), coloured from the theme, each with its data as a table
// for screen readers and keyboard users.
import uPlot from "uplot";
import { html, useEffect, useRef } from "./html.js";
import { formatNumber, localTime, utc } from "./format.js";

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function bars() {
  return uPlot.paths.bars({ size: [0.8, 60] });
}

/**
 * A chart of `series` ([{label, unit, values, kind: "bars" | "line" | "step"}]) over `times`
 * (Date[]). `caption` names it for assistive technology.
 */
export function Chart({ times, series, caption, height = 240, id, range }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const el = box.current;
    if (!el || !times.length) return undefined;
    const text = cssVar("--text");
    const grid = cssVar("--grid");
    const colours = [cssVar("--chart-1"), cssVar("--chart-2"), cssVar("--chart-3")];
    const opts = {
      width: Math.max(280, el.clientWidth),
      height,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: range ? { time: true, range: () => [range[0].getTime() / 1000, range[1].getTime() / 1000] } : { time: true },
        // bars are amounts: their axis starts at zero
        y: series[0].kind === "bars" ? { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } : {},
      },
      axes: [
        { stroke: text, grid: { stroke: grid }, ticks: { stroke: grid } },
        {
          stroke: text,
          grid: { stroke: grid },
          ticks: { stroke: grid },
          size: 64,
          label: series[0].unit,
          values: (u, splits) => splits.map((v) => formatNumber(v, 2)),
        },
      ],
      series: [
        { label: "time", value: (u, v) => (v == null ? "—" : localTime(new Date(v * 1000))) },
        ...series.map((s, i) => ({
          label: `${s.label} (${s.unit})`,
          stroke: colours[i % colours.length],
          fill: s.kind === "bars" ? colours[i % colours.length] + "99" : undefined,
          width: s.kind === "bars" ? 0 : 2,
          paths: s.kind === "bars" ? bars() : s.kind === "step" ? uPlot.paths.stepped({ align: 1 }) : undefined,
          points: { show: false },
          value: (u, v) => (v == null ? "—" : `${formatNumber(v, 3)} ${s.unit}`),
        })),
      ],
    };
    const data = [times.map((t) => t.getTime() / 1000), ...series.map((s) => s.values)];
    plot.current = new uPlot(opts, data, el);
    const resize = new ResizeObserver(() => {
      if (plot.current) plot.current.setSize({ width: Math.max(280, el.clientWidth), height });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [times, series, height, range, document.documentElement.dataset.theme]);
  if (!times.length) return null;
  return html`<figure class="chart" id=${id}>
    <figcaption>${caption}</figcaption>
    <div ref=${box} class="chart-box" role="img" aria-label=${caption}></div>
    <details class="chart-data">
      <summary>Data as a table</summary>
      <div class="table-wrap">
        <table>
          <thead><tr><th scope="col">Time</th>${series.map((s) => html`<th scope="col">${s.label} (${s.unit})</th>`)}</tr></thead>
          <tbody>
            ${times.map(
              (t, i) => html`<tr>
                <td><time datetime=${t.toISOString()} title=${utc(t)}>${localTime(t)}</time></td>
                ${series.map((s) => html`<td class="n">${formatNumber(s.values[i], 3)} ${s.unit}</td>`)}
              </tr>`,
            )}
          </tbody>
        </table>
      </div>
    </details>
  </figure>`;
}
