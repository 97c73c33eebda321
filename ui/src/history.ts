// History tab: search the audit log, open one call's timeline with its hash-chain check, export CSV.
import { api, errorText } from "./api";
import type { CallDetail } from "./bindings/CallDetail";
import type { CallOutcome } from "./bindings/CallOutcome";
import type { CallSummary } from "./bindings/CallSummary";
import type { HistoryFilter } from "./bindings/HistoryFilter";
import type { Playback } from "./bindings/Playback";
import { byId, el } from "./dom";
import { floorPlanBlock, geoLink, siteMapBlock } from "./floorplan";
import { clock, dateTime } from "./format";

const LIMIT = 200;
const OUTCOMES: readonly string[] = ["detected", "routing", "callback", "ringing", "answered", "ended", "failed", "rejected"];

// Responses can come back out of order; only the latest request may draw.
let searchToken = 0;
let detailToken = 0;
let refreshTimer: number | undefined;

function filter(): HistoryFilter {
  const outcome = byId<HTMLSelectElement>("history-outcome").value;
  return {
    text: byId<HTMLInputElement>("history-search").value.trim(),
    from_date: byId<HTMLInputElement>("history-from").value,
    to_date: byId<HTMLInputElement>("history-to").value,
    outcome: OUTCOMES.includes(outcome) ? (outcome as CallOutcome) : null,
    include_tests: byId<HTMLInputElement>("history-include-tests").checked,
    limit: LIMIT,
  };
}

export function initHistory(): void {
  byId<HTMLFormElement>("history-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void runSearch();
  });
  byId("history-export").addEventListener("click", () => void exportCsv());
  byId("detail-close").addEventListener("click", closeDetail);
  byId("recording-play").addEventListener("click", () => void play());
  byId("recording-stop").addEventListener("click", () => void stop());
  const body = byId("history-table").querySelector("tbody");
  body?.addEventListener("click", (e) => {
    const row = (e.target as Element).closest<HTMLElement>("tr.history-row");
    if (row?.dataset.callId) void openDetail(row.dataset.callId);
  });
  body?.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    const row = (e.target as Element).closest<HTMLElement>("tr.history-row");
    if (!row?.dataset.callId) return;
    e.preventDefault();
    void openDetail(row.dataset.callId);
  });
}

/** A burst of alert events causes one search, not one per event. */
export function refreshSoon(): void {
  clearTimeout(refreshTimer);
  refreshTimer = window.setTimeout(() => void runSearch(), 750);
}

export async function runSearch(): Promise<void> {
  const token = ++searchToken;
  const count = byId("history-count");
  count.textContent = "Searching…";
  try {
    const rows = await api.searchHistory(filter());
    if (token !== searchToken) return;
    renderRows(rows);
    count.textContent =
      `${rows.length} ${rows.length === 1 ? "call" : "calls"}` + (rows.length >= LIMIT ? " (limit reached — narrow the search)" : "");
  } catch (e) {
    if (token === searchToken) count.textContent = `Search failed: ${errorText(e)}`;
  }
}

function renderRows(rows: CallSummary[]): void {
  const selected = byId("call-detail").hidden ? null : byId("call-detail").dataset.callId;
  byId("history-table").querySelector("tbody")?.replaceChildren(
    ...rows.map((r) =>
      el(
        "tr",
        {
          class: "history-row",
          attrs: {
            "data-call-id": r.call_id,
            "data-test-call": String(r.test_call),
            "data-outcome": r.outcome,
            "data-selected": String(r.call_id === selected),
            tabindex: 0,
          },
        },
        el("td", { text: dateTime(r.first_at) }),
        el("td", { text: r.caller_name ?? "(no name)" }),
        el("td", { text: r.caller_number }),
        el(
          "td",
          {},
          r.normalized && r.normalized !== r.dialed ? `${r.dialed} → ${r.normalized}` : r.dialed,
          r.test_call && el("span", { class: "test-tag", text: "TEST" }),
        ),
        el("td", { text: r.location }),
        el("td", { class: "outcome", attrs: { "data-outcome": r.outcome }, text: r.outcome + (r.outcome_detail ? ` — ${r.outcome_detail}` : "") }),
        el("td", { text: r.acknowledged_by ?? "—" }),
        el("td", { text: r.route ?? "—" }),
      ),
    ),
  );
}

async function openDetail(callId: string): Promise<void> {
  const token = ++detailToken;
  const panel = byId("call-detail");
  const error = byId("detail-error");
  panel.hidden = false;
  panel.dataset.callId = callId;
  for (const row of byId("history-table").querySelectorAll<HTMLElement>("tr.history-row"))
    row.dataset.selected = String(row.dataset.callId === callId);
  error.hidden = true;
  try {
    const d = await api.callDetail(callId);
    if (token === detailToken) renderDetail(d);
  } catch (e) {
    if (token !== detailToken) return;
    error.hidden = false;
    error.textContent = `Could not load call ${callId}: ${errorText(e)}`;
  }
}

function renderDetail(d: CallDetail): void {
  const s = d.summary;
  byId("detail-title").textContent = `${s.caller_name ?? "(no name)"} — ${s.caller_number}`;
  const chain = byId("chain-check");
  chain.dataset.ok = String(d.chain.ok);
  chain.textContent = d.chain.ok ? d.chain.detail : `AUDIT CHAIN BROKEN — ${d.chain.detail}`;

  const fields: [string, string | null][] = [
    ["Call id", s.call_id],
    ["Detected", dateTime(s.first_at)],
    ["Last event", dateTime(s.last_at)],
    ["Caller", s.caller_name ?? "(no name)"],
    ["Callback number", s.caller_number],
    ["Dialled", s.normalized && s.normalized !== s.dialed ? `${s.dialed} → ${s.normalized}` : s.dialed],
    ["Test call", s.test_call ? "yes — no emergency" : "no"],
    ["Policy", s.policy],
    ["Site", s.site],
    ["Location", s.location],
    ["Location source", s.location_source],
    ["Route", s.route],
    ["Outcome", s.outcome + (s.outcome_detail ? ` — ${s.outcome_detail}` : "")],
    ["Answered", s.answered_at && dateTime(s.answered_at)],
    ["Acknowledged", s.acknowledged_by && `${s.acknowledged_by} at ${dateTime(s.acknowledged_at)}`],
    ["Ended", s.ended_at && dateTime(s.ended_at)],
    ["Audit events", `${s.event_count} (seq ${s.first_seq}–${s.last_seq})`],
  ];
  renderRecording(d);
  // The call's last known location (every event carries the call's location as it stood), drawn:
  // its floor plan with the pin, its coordinates and their site map. Not an older event's plan: after an update to
  // a place without one, an old pin would show the caller where they no longer are.
  const located = d.events[d.events.length - 1]?.event.location;
  const plan = floorPlanBlock(located?.erl);
  const map = siteMapBlock(located);
  byId("detail-summary").replaceChildren(
    ...fields.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v ?? "" })]),
    ...(located?.geo ? [el("dt", { text: "Coordinates" }), el("dd", {}, geoLink(located.geo))] : []),
    ...(map ? [el("dt", { text: "Site map" }), el("dd", {}, map)] : []),
    ...(plan ? [el("dt", { text: "Floor plan" }), el("dd", {}, plan)] : []),
  );

  byId("detail-timeline").querySelector("tbody")?.replaceChildren(
    ...d.events.map((r) =>
      el(
        "tr",
        { class: "timeline-row", attrs: { "data-seq": r.seq } },
        el("td", { text: String(r.seq) }),
        el("td", { text: clock(r.at), attrs: { title: dateTime(r.at) } }),
        el("td", { text: r.kind }),
        el("td", { text: r.detail }),
        el("td", { class: "hash", text: r.hash.slice(0, 12), attrs: { title: r.hash } }),
      ),
    ),
  );
}

function renderRecording(d: CallDetail): void {
  const box = byId("detail-recording");
  const r = d.recording;
  box.hidden = !r;
  box.dataset.callId = d.summary.call_id;
  if (!r) return;
  const check = byId("recording-check");
  check.dataset.ok = String(r.ok);
  const secs = Math.round(Number(r.duration_ms) / 1000);
  const length = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
  check.textContent = `Recording ${length} — ${r.detail}`;
  check.title = `${r.path}\nSHA-256 ${r.sha256}`;
  byId<HTMLButtonElement>("recording-play").disabled = !r.ok;
  if (playing !== d.summary.call_id) byId("playback-state").textContent = "";
}

// The call whose recording is playing (one at a time).
let playing: string | null = null;

async function play(): Promise<void> {
  const callId = byId("detail-recording").dataset.callId;
  if (!callId) return;
  const state = byId("playback-state");
  state.textContent = "Starting…";
  try {
    showPlayback(await api.playRecording(callId));
  } catch (e) {
    state.dataset.state = "failed";
    state.textContent = `Cannot play: ${errorText(e)}`;
  }
}

async function stop(): Promise<void> {
  try {
    const p = await api.stopPlayback();
    if (p) showPlayback(p);
  } catch (e) {
    byId("playback-state").textContent = `Cannot stop: ${errorText(e)}`;
  }
}

const PLAYBACK_WORDS = { playing: "Playing", finished: "Finished", stopped: "Stopped", failed: "Cannot play" } as const;

/** `desk:playback`: shown when it is about the call open in the detail panel. */
export function showPlayback(p: Playback): void {
  playing = p.state === "playing" ? p.call_id : playing === p.call_id ? null : playing;
  if (byId("detail-recording").dataset.callId !== p.call_id) return;
  const state = byId("playback-state");
  state.dataset.state = p.state;
  state.textContent = `${PLAYBACK_WORDS[p.state]} — ${p.detail}`;
  byId<HTMLButtonElement>("recording-stop").disabled = p.state !== "playing";
}

function closeDetail(): void {
  ++detailToken;
  byId("call-detail").hidden = true;
  for (const row of byId("history-table").querySelectorAll("tr.history-row")) row.setAttribute("data-selected", "false");
}

async function exportCsv(): Promise<void> {
  const button = byId<HTMLButtonElement>("history-export");
  const result = byId("history-export-result");
  button.disabled = true;
  result.textContent = "Exporting…";
  try {
    result.textContent = `Exported to ${await api.exportHistoryCsv(filter())}`;
  } catch (e) {
    result.textContent = `Export failed: ${errorText(e)}`;
  } finally {
    button.disabled = false;
  }
}
