// The alert board: one card per active call, kept in step with `desk:alert` events.
import { api, errorText } from "./api";
import type { ActiveCall } from "./bindings/ActiveCall";
import type { CallState } from "./bindings/CallState";
import type { LocationTrust } from "./bindings/LocationTrust";
import type { TimelineEntry } from "./bindings/TimelineEntry";
import { byId, el, morph } from "./dom";
import { escalationBlock, tickCountdowns } from "./escalation";
import { address, age, clock, dateTime, geo } from "./format";
import { floorPlanBlock, geoLink, siteMapBlock } from "./floorplan";
import * as leg from "./leg";
import { toggleDetails } from "./status";

const calls = new Map<string, ActiveCall>();
const cards = new Map<string, HTMLElement>();
const pending = new Set<string>();
const errors = new Map<string, string>();
// Ids dismissed while the start-up snapshot was in flight, so the snapshot can't resurrect them.
// Kept only until the snapshot is in: afterwards a set of every call ever dismissed would grow
// with each call for as long as the desk runs.
const removed = new Set<string>();
let snapshotPending = true;
// The card the keys act on (N moves it); none: they act on the oldest unacknowledged call.
let selected: string | null = null;
// When the last alert event reached the page (its paint time is measured from here too).
let received = 0;

let board: HTMLElement;
let empty: HTMLElement;
let badge: HTMLElement;
let showBoard: () => void = () => {};

const STATE_WORDS: Record<CallState, string> = {
  routing: "Routing…",
  retrying: "RETRYING ROUTES",
  ringing: "Ringing at provider",
  answered: "Connected to emergency services",
  ended: "Ended",
  failed: "FAILED",
};

const TRUST_WORDS: Record<LocationTrust, string> = {
  validated: "Validated address",
  verify: "VERIFY WITH THE CALLER",
  unknown: "NO LOCATION — ASK THE CALLER",
};

const urgent = (c: ActiveCall) => !c.test_call && c.acknowledged_by === null;
const finished = (c: ActiveCall) => c.state === "ended" || c.state === "failed";
const time = (c: ActiveCall) => Date.parse(c.detected_at) || 0;

export function initAlerts(opts: { showBoard: () => void }): void {
  board = byId("alert-board");
  empty = byId("alerts-empty");
  badge = byId("alert-count");
  showBoard = opts.showBoard;
  document.addEventListener("keydown", onKey);
  setInterval(tickAges, 1000);
}

/** The board as the desk had it when the page started (`[]` when it could not be read). */
export function loadSnapshot(list: ActiveCall[]): void {
  for (const c of list) if (!removed.has(c.call_id)) upsert(c);
  snapshotPending = false;
  removed.clear();
}

/** The call ids of the cards on the page, as drawn. */
export function shownCallIds(): string[] {
  return [...document.querySelectorAll<HTMLElement>("article.alert-card")].map((c) => c.dataset.callId ?? "");
}

/** A card nobody sees, drawn once when the page starts and removed two frames later. The first
 * card of a page cost ~300 ms to build, lay out and paint (BENCHMARKS.md: the first use of its
 * fonts, sizes and layout), and that first card is the first emergency: the page pays it now,
 * before any call. Out of view (1 % opacity, behind everything, not clickable) and hidden from
 * screen readers. */
export function prewarm(): Promise<void> {
  const now = new Date().toISOString();
  const sample: ActiveCall = {
    call_id: "prewarm",
    test_call: false,
    detected_at: now,
    caller: { number: "+15555550100", display_name: "Warm Up", uri: "sip:warm@up", source: "udp:0.0.0.0:0" },
    dialed: "911",
    normalized: "911",
    policy: "-",
    site: "-",
    location: {
      source: "site-default",
      erl: { label: "Floor 2, room 210", validated: false, rd: "Main St", hno: "1", flr: "2", room: "210", elins: ["1"] },
      geo: null,
      method: null,
      warnings: ["-"],
    },
    location_trust: "verify",
    location_note: "-",
    route: { name: "-", kind: "sip-trunk", target: "-", attempt: 1, presented_number: "-" },
    state: "retrying",
    state_detail: "-",
    failovers: ["-"],
    retry_round: 1,
    acknowledged_by: null,
    acknowledged_at: null,
    acknowledgements: [],
    acknowledge_mode: "any",
    alarming: true,
    last_seq: 1,
    timeline: [{ seq: 1, at: now, kind: "detected", detail: "-", subject: "" }],
    escalation: null,
  };
  const warm = card(sample);
  warm.classList.add("prewarm");
  warm.setAttribute("aria-hidden", "true");
  warm.removeAttribute("tabindex");
  board.prepend(warm);
  // The alarm's red frame too (body.alarming::after), the other thing the first alert draws.
  const frame = el("div", { class: "prewarm-frame", attrs: { "aria-hidden": "true" } });
  document.body.append(frame);
  return new Promise((done) =>
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        warm.remove();
        frame.remove();
        done();
      }),
    ),
  );
}

/** Insert or replace a card. Returns true when it is a new emergency (not a test call). */
export function upsert(c: ActiveCall): boolean {
  received = performance.now();
  const prev = calls.get(c.call_id);
  // The start-up snapshot can arrive after a newer event for the same call.
  if (prev && prev.last_seq > c.last_seq) return false;
  calls.set(c.call_id, c);
  render(c.call_id, true);
  return !prev && !c.test_call;
}

/** Redraw one card (or all, for `null`) after something outside the call changed, such as
 * this desk's leg. */
export function refresh(callId: string | null): void {
  if (callId === null) for (const id of calls.keys()) render(id, false);
  else render(callId, false);
}

export function remove(callId: string): void {
  if (snapshotPending) removed.add(callId);
  calls.delete(callId);
  pending.delete(callId);
  errors.delete(callId);
  cards.get(callId)?.remove();
  cards.delete(callId);
  if (selected === callId) selected = null;
  refreshBoard();
}

function render(id: string, fresh: boolean): void {
  const c = calls.get(id);
  if (!c) return;
  const old = cards.get(id);
  const active = document.activeElement;
  const hadFocus = !!old && !!active && old.contains(active);
  // Patched in place, not replaced: the officer's click on Acknowledge lands even when an event
  // of the call redraws the card between the press and the release (dom.ts, `morph`).
  const shown = old ? morph(old, card(c)) : card(c);
  cards.set(id, shown);
  // A control that had the focus and is gone now (Acknowledge, once acknowledged): the focus
  // stays on the card, so the keys go on acting on this call.
  if (hadFocus && !(active as Node).isConnected) shown.focus();
  refreshBoard();
  if (fresh) {
    const seq = c.last_seq;
    const since = received;
    // The page's own work (the card built, the board updated) apart from the frames that draw
    // it: where a slow alert spends its time (BENCHMARKS.md, first alert).
    const domMs = performance.now() - since;
    // Two frames: the first callback runs before paint, the second after it.
    requestAnimationFrame(() =>
      requestAnimationFrame(() => void api.alertShown(id, seq, performance.now() - since, domMs).catch(() => {})),
    );
  }
}

function sorted(): ActiveCall[] {
  return [...calls.values()].sort(
    (a, b) => Number(urgent(b)) - Number(urgent(a)) || time(b) - time(a) || a.call_id.localeCompare(b.call_id),
  );
}

function refreshBoard(): void {
  sorted().forEach((c, i) => {
    const e = cards.get(c.call_id);
    if (e && board.children[i] !== e) board.insertBefore(e, board.children[i] ?? null);
  });
  empty.hidden = calls.size > 0;
  const n = [...calls.values()].filter(urgent).length;
  badge.textContent = n > 0 ? `(${n})` : "";
}

function card(c: ActiveCall): HTMLElement {
  const kind = c.test_call
    ? `TEST CALL ${c.normalized || c.dialed} — no emergency`
    : `EMERGENCY CALL ${c.normalized || c.dialed}`;
  const dialed = c.normalized && c.normalized !== c.dialed ? `Dialled ${c.dialed} → ${c.normalized}` : `Dialled ${c.dialed}`;
  // Failed and retrying say why: the officer sees that every route failed, and what comes next.
  const stateText =
    c.state === "failed" || (c.state === "retrying" && c.state_detail)
      ? `${STATE_WORDS[c.state]} — ${c.state_detail}`
      : STATE_WORDS[c.state];

  return el(
    "article",
    {
      class: "alert-card",
      attrs: {
        "data-call-id": c.call_id,
        "data-test-call": String(c.test_call),
        "data-state": c.state,
        "data-acknowledged": String(c.acknowledged_by !== null),
        // The call's last event drawn (tests wait on it for a redraw).
        "data-seq": c.last_seq,
        // What a screen reader says on reaching the card: the call, who, where, and its state.
        "aria-label": `${kind}, ${c.acknowledged_by === null && !c.test_call ? "not acknowledged" : "acknowledged"}, ${
          c.caller.display_name ?? c.caller.number
        }, ${c.location.erl?.label ?? TRUST_WORDS[c.location_trust]}, ${stateText}`,
        "aria-current": selected === c.call_id ? "true" : null,
        // Reachable by Tab and by N; the keys act on the card that has focus.
        tabindex: 0,
      },
    },
    el(
      "header",
      { class: "card-band" },
      el("span", { class: "alert-kind", text: kind }),
      el("span", { class: "call-state", text: stateText, attrs: { "data-state": c.state } }),
    ),
    el("div", { class: "caller-name", text: c.caller.display_name ?? "(no name)" }),
    el(
      "div",
      { class: "caller-line" },
      el("span", { class: "callback-number" }, el("span", { class: "label", text: "Callback " }), c.caller.number),
      el("span", { class: "dialed", text: dialed }),
    ),
    el("div", { class: "caller-uri", text: `From ${c.caller.uri} via ${c.caller.source}` }),
    el(
      "div",
      { class: "detected-at" },
      `Detected ${dateTime(c.detected_at)} `,
      el("span", { class: "age", text: age(c.detected_at), attrs: { "data-at": c.detected_at, "aria-hidden": "true" } }),
    ),
    locationBlock(c),
    el("div", { class: "policy-site", text: `Policy ${c.policy}` + (c.site ? ` · Site ${c.site}` : "") }),
    el(
      "div",
      { class: "route" },
      c.route
        ? `Route ${c.route.name} → ${c.route.target} · presenting ${c.route.presented_number}` +
            (c.route.attempt > 0 ? ` · attempt ${c.route.attempt + 1}` : "") +
            (c.retry_round !== null ? ` · round ${c.retry_round} through every route` : "")
        : "No route yet",
    ),
    c.failovers.length > 0 &&
      el("ul", { class: "failovers" }, ...c.failovers.map((f) => el("li", { text: `failed over from ${f}` }))),
    escalationBlock(c),
    el(
      "ol",
      { class: "timeline", attrs: { "aria-label": "Timeline" } },
      ...folded(c.timeline).map(({ t, repeats }) =>
        el(
          "li",
          { attrs: { "data-kind": t.kind, "data-subject": t.subject || null, "data-repeats": repeats > 1 ? repeats : null } },
          el("span", { class: "tl-time", text: clock(t.at) }),
          el("span", { class: "tl-kind", text: t.kind }),
          el(
            "span",
            { class: "tl-detail", text: t.detail },
            repeats > 1 && el("span", { class: "tl-repeats", text: `(${repeats} attempts)` }),
          ),
        ),
      ),
    ),
    leg.controls(c),
    actions(c),
  );
}

/** The timeline with each notification target's attempts folded into its latest line (a
 * target that keeps failing would otherwise fill the card with "retrying in 1 s" lines). */
function folded(timeline: TimelineEntry[]): { t: TimelineEntry; repeats: number }[] {
  const last = new Map<string, number>();
  const count = new Map<string, number>();
  for (const t of timeline) {
    if (t.kind !== "notified" || !t.subject) continue;
    last.set(t.subject, t.seq);
    count.set(t.subject, (count.get(t.subject) ?? 0) + 1);
  }
  return timeline
    .filter((t) => t.kind !== "notified" || !t.subject || last.get(t.subject) === t.seq)
    .map((t) => ({ t, repeats: t.kind === "notified" && t.subject ? (count.get(t.subject) ?? 1) : 1 }));
}

function locationBlock(c: ActiveCall): HTMLElement {
  const { erl, geo: point, method, warnings } = c.location;
  const small = (cls: string, label: string, v: string | undefined) => !!v && el("span", { class: cls, text: `${label} ${v}` });
  return el(
    "section",
    { class: "location", attrs: { "aria-label": "Location" } },
    el("div", { class: "location-trust", text: TRUST_WORDS[c.location_trust], attrs: { "data-trust": c.location_trust } }),
    erl && el("div", { class: "location-label", text: erl.label }),
    erl && el("div", { class: "location-address", text: address(erl) }),
    erl &&
      el(
        "div",
        { class: "location-where" },
        small("location-floor", "Floor", erl.flr),
        small("location-room", "Room", erl.room),
        small("location-building", "Building", erl.bld),
        small("location-unit", "Unit", erl.unit),
        small("location-seat", "Seat", erl.seat),
      ),
    erl && erl.elins && erl.elins.length > 0 && el("div", { class: "location-elin", text: `ELIN ${erl.elins.join(", ")}` }),
    point && el("div", { class: "location-geo", text: geo(point, method) }),
    point && geoLink(point),
    siteMapBlock(c.location),
    floorPlanBlock(erl),
    el("div", { class: "location-note", text: c.location_note }),
    warnings.length > 0 && el("ul", { class: "location-warnings" }, ...warnings.map((w) => el("li", { text: w }))),
  );
}

function actions(c: ActiveCall): HTMLElement {
  const busy = pending.has(c.call_id);
  const box = el("div", { class: "card-actions" });
  // Every desk's acknowledgement is shown; with "each", this desk still acknowledges for itself.
  for (const a of c.acknowledgements) {
    const where = a.desk ? ` (${a.desk})` : "";
    box.append(el("div", { class: "ack-by", text: `Acknowledged by ${a.by}${where} at ${dateTime(a.at)}` }));
  }
  if (c.acknowledged_by === null && c.acknowledge_mode === "each" && !c.test_call) {
    box.append(el("div", { class: "ack-each", text: "Each desk acknowledges this call: this desk has not yet." }));
  }
  if (c.acknowledged_by === null && !c.test_call) {
    const b = el("button", { class: "ack-button primary", attrs: { type: "button" } }, "Acknowledge ", el("kbd", { text: "(Ctrl+Enter)" }));
    b.disabled = busy;
    b.onclick = () => void acknowledge(c.call_id);
    box.append(b);
  }
  if (finished(c) && (c.acknowledged_by !== null || c.test_call)) {
    const b = el("button", { class: "dismiss-button", text: "Dismiss", attrs: { type: "button" } });
    b.disabled = busy;
    b.onclick = () => void dismiss(c.call_id);
    box.append(b);
  }
  const err = errors.get(c.call_id);
  if (err) box.append(el("div", { class: "card-error", text: err, attrs: { role: "alert" } }));
  return box;
}

async function act(id: string, run: () => Promise<void>): Promise<void> {
  if (pending.has(id)) return;
  pending.add(id);
  errors.delete(id);
  render(id, false);
  try {
    await run();
    pending.delete(id);
  } catch (e) {
    pending.delete(id);
    errors.set(id, errorText(e));
  }
  render(id, false);
}

const acknowledge = (id: string) =>
  act(id, async () => {
    const updated = await api.acknowledge(id);
    pending.delete(id);
    upsert(updated);
  });

const dismiss = (id: string) =>
  act(id, async () => {
    await api.dismiss(id);
    remove(id);
  });

/** The card the keys act on: the one with focus (N, Tab or a click put it there), else the
 * oldest unacknowledged call — it has waited longest. */
function target(): ActiveCall | undefined {
  const focused = (document.activeElement as HTMLElement | null)?.closest<HTMLElement>("article.alert-card");
  const id = focused?.dataset.callId ?? selected;
  const chosen = id ? calls.get(id) : undefined;
  return chosen ?? [...calls.values()].filter(urgent).sort((a, b) => time(a) - time(b))[0];
}

/** N: the next card in the board's order (unacknowledged first), round again after the last. */
function selectNext(): void {
  const order = sorted();
  if (order.length === 0) return;
  const at = order.findIndex((c) => c.call_id === (target()?.call_id ?? ""));
  const next = order[(at + 1) % order.length];
  const before = selected;
  selected = next.call_id;
  if (before) render(before, false);
  render(next.call_id, false);
  const e = cards.get(next.call_id);
  e?.focus();
  e?.scrollIntoView({ block: "nearest" });
}

function onKey(e: KeyboardEvent): void {
  if (e.defaultPrevented || e.repeat) return;
  const ctrlEnter = e.key === "Enter" && (e.ctrlKey || e.metaKey);
  const t = e.target;
  const inField =
    t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement ||
    (t instanceof HTMLElement && t.isContentEditable);
  const plain = !e.ctrlKey && !e.metaKey && !e.altKey && !inField;
  const key = plain ? e.key.toLowerCase() : ctrlEnter ? "a" : "";
  if (key === "d") {
    e.preventDefault();
    toggleDetails();
    return;
  }
  if (!["a", "n", "l", "t"].includes(key)) return;
  e.preventDefault();
  showBoard();
  if (key === "n") return selectNext();
  const c = target();
  if (!c) return;
  if (key === "a") {
    // The focused call if it still needs it, else the oldest: never a call that is already
    // acknowledged, and a pending one blocks the key rather than letting a double press
    // acknowledge a second call the officer has not read yet.
    const id = urgent(c) ? c.call_id : [...calls.values()].filter(urgent).sort((a, b) => time(a) - time(b))[0]?.call_id;
    if (id) void acknowledge(id);
    return;
  }
  const refused = leg.byKey(c, key === "l" ? "listen" : "talk");
  if (refused) {
    errors.set(c.call_id, refused);
    render(c.call_id, false);
  }
}

function tickAges(): void {
  const now = Date.now();
  for (const span of board.querySelectorAll<HTMLElement>(".age[data-at]")) span.textContent = age(span.dataset.at ?? "", now);
  tickCountdowns(board, now);
}
