// The console's pages: one module each, shown in the navigation when the signed-in caller's
// credentials open the door named in `needs` (see `me.allowed`). To add a page (customers,
// SIM cards, …): write pages/<name>.js exporting a component, import it here, add one line.
import { Dashboard } from "./dashboard.js";
import { Meters } from "./meters.js";
import { Alerts } from "./alerts.js";
import { Tariffs } from "./tariffs.js";
import { Imports } from "./imports.js";
import { Audit } from "./audit.js";

export const PAGES = [
  { path: "dashboard", title: "Dashboard", needs: ["Query.dashboard"], component: Dashboard },
  { path: "meters", title: "Meters", customerTitle: "My meters", needs: ["Query.meters"], component: Meters },
  { path: "alerts", title: "Alerts", needs: ["Query.alerts"], component: Alerts },
  { path: "tariffs", title: "Tariffs", customerTitle: "My tariff", needs: ["Query.tariffs", "Query.currentTariff"], component: Tariffs },
  { path: "imports", title: "Imports", needs: ["POST /api/v1/imports/meters"], component: Imports },
  { path: "audit", title: "Audit", needs: ["Query.history"], component: Audit },
];

/** The pages these credentials may open, in navigation order. */
export function pagesFor(me) {
  return PAGES.filter((p) => p.needs.some((door) => me.allowed.includes(door)));
}
