import "./style.css";
import * as alerts from "./alerts";
import { api, errorText, events, inDeskApp } from "./api";
import { byId } from "./dom";
import * as history from "./history";
import * as leg from "./leg";
import { applyStoredTheme, fillAccounts, fillSettings, initSettings, updateSetup } from "./settings";
import { initStatus, renderStatus, showStatusError } from "./status";

type Tab = "alerts" | "history" | "settings";
const TABS: Tab[] = ["alerts", "history", "settings"];
let current: Tab = "alerts";

function showTab(tab: Tab): void {
  const changed = tab !== current;
  current = tab;
  for (const t of TABS) {
    const button = byId(`tab-${t}`);
    button.setAttribute("aria-selected", String(t === tab));
    button.tabIndex = t === tab ? 0 : -1;
    byId(t).hidden = t !== tab;
  }
  if (changed && tab === "history") void history.runSearch();
}

function initTabs(): void {
  TABS.forEach((t, i) => {
    const button = byId(`tab-${t}`);
    button.addEventListener("click", () => showTab(t));
    // Arrow keys move between tabs (WAI-ARIA tabs pattern).
    button.addEventListener("keydown", (e) => {
      const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (!step) return;
      const next = TABS[(i + step + TABS.length) % TABS.length];
      showTab(next);
      byId(`tab-${next}`).focus();
    });
  });
}

async function start(): Promise<void> {
  applyStoredTheme();
  initTabs();
  initStatus();
  initSettings();
  history.initHistory();
  alerts.initAlerts({ showBoard: () => showTab("alerts") });
  const warm = alerts.prewarm();
  leg.initLeg({ changed: alerts.refresh });

  if (!inDeskApp()) {
    byId("no-tauri").hidden = false;
    showStatusError("Not running inside the desk app");
    return;
  }

  // Listen before fetching, so nothing that happens during start-up is missed.
  let statusEventSeen = false;
  await Promise.all([
    events.status((s) => {
      statusEventSeen = true;
      renderStatus(s);
      updateSetup(s);
      leg.setJoinInfo(s.join);
      fillAccounts(s);
    }),
    events.leg((l) => leg.update(l)),
    events.playback((p) => history.showPlayback(p)),
    events.alert((c) => {
      if (alerts.upsert(c)) showTab("alerts");
      if (current === "history") history.refreshSoon();
    }),
    events.alertRemoved((id) => alerts.remove(id)),
  ]);

  await Promise.all([
    api.getStatus().then(
      (s) => {
        if (statusEventSeen) return;
        renderStatus(s);
        updateSetup(s);
        leg.setJoinInfo(s.join);
        fillAccounts(s);
      },
      (e) => showStatusError(`Cannot read desk status: ${errorText(e)}`),
    ),
    api.getActiveCalls().then(alerts.loadSnapshot, (e) => {
      alerts.loadSnapshot([]);
      const empty = byId("alerts-empty");
      empty.textContent = `Could not load active calls: ${errorText(e)}`;
      empty.classList.add("error-text");
    }),
    api.getLeg().then((l) => l && leg.update(l), () => {}),
    api.getSettings().then(fillSettings, (e) => {
      byId("settings-result").textContent = `Could not load settings: ${errorText(e)}`;
    }),
  ]);
  // Two frames: after the first paint of the board. The desk logs every start of the page
  // with the alerts it shows (a reload after a crash of the page's process included).
  await warm;
  requestAnimationFrame(() =>
    requestAnimationFrame(() => void api.pageReady(alerts.shownCallIds()).catch(() => {})),
  );
}

start().catch((e) => showStatusError(`Desk UI failed to start: ${errorText(e)}`));
