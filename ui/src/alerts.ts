// The alert board: one card per active call, kept in step with `desk:alert` events.
import { api, errorText } from "./api";
import type { ActiveCall } from "./bindings/ActiveCall";
import type { CallState } from "./bindings/CallState";
import type { LocationTrust } from "./bindings/LocationTrust";
import { byId, el } from "./dom";
import { address, age, clock, dateTime, geo } from "./format";
import * as leg from "./leg";

const calls = new Map<string, ActiveCall>();
const cards = new Map<string, HTMLElement>();
const pending = new Set<string>();
const errors = new Map<string, string>();
// Ids dismissed while the start-up snapshot was in flight, so the snapshot can't resurrect them.
const removed = new Set<string>();

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

export function loadSnapshot(list: ActiveCall[]): void {
  for (const c of list) if (!removed.has(c.call_id)) upsert(c);
}

/** The call ids of the cards on the page, as drawn. */
export function shownCallIds(): string[] {
  return [...document.querySelectorAll<HTMLElement>("article.alert-card")].map((c) => c.dataset.callId ?? "");
}

/** Insert or replace a card. Returns true when it is a new emergency (not a test call). */
export function upsert(c: ActiveCall): boolean {
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
  removed.add(callId);
  calls.delete(callId);
  pending.delete(callId);
  errors.delete(callId);
  cards.get(callId)?.remove();
  cards.delete(callId);
  refreshBoard();
}

function render(id: string, fresh: boolean): void {
  const c = calls.get(id);
  if (!c) return;
  const old = cards.get(id);
  const next = card(c);
  // Keep keyboard focus on the same control when a card is rebuilt under it.
  const focused = old?.contains(document.activeElement) ? (document.activeElement as HTMLElement).className : null;
  if (old) old.replaceWith(next);
  cards.set(id, next);
  if (focused) (next.getElementsByClassName(focused)[0] as HTMLElement | undefined)?.focus();
  refreshBoard();
  if (fresh) {
    const seq = c.last_seq;
    // Two frames: the first callback runs before paint, the second after it.
    requestAnimationFrame(() => requestAnimationFrame(() => void api.alertShown(id, seq).catch(() => {})));
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
        "aria-label": kind,
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
    el(
      "ol",
      { class: "timeline" },
      ...c.timeline.map((t) =>
        el(
          "li",
          {},
          el("span", { class: "tl-time", text: clock(t.at) }),
          el("span", { class: "tl-kind", text: t.kind }),
          el("span", { class: "tl-detail", text: t.detail }),
        ),
      ),
    ),
    leg.controls(c),
    actions(c),
  );
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
    b.addEventListener("click", () => void acknowledge(c.call_id));
    box.append(b);
  }
  if (finished(c) && (c.acknowledged_by !== null || c.test_call)) {
    const b = el("button", { class: "dismiss-button", text: "Dismiss", attrs: { type: "button" } });
    b.disabled = busy;
    b.addEventListener("click", () => void dismiss(c.call_id));
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

function onKey(e: KeyboardEvent): void {
  if (e.defaultPrevented || e.repeat) return;
  const ctrlEnter = e.key === "Enter" && (e.ctrlKey || e.metaKey);
  const t = e.target;
  const inField =
    t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement ||
    (t instanceof HTMLElement && t.isContentEditable);
  const aKey = e.key.toLowerCase() === "a" && !e.ctrlKey && !e.metaKey && !e.altKey && !inField;
  if (!ctrlEnter && !aKey) return;
  // Oldest first: it has waited longest. A pending one blocks the key rather than letting a
  // double press acknowledge a second call the officer has not read yet.
  const oldest = [...calls.values()].filter(urgent).sort((a, b) => time(a) - time(b))[0];
  if (!oldest) return;
  e.preventDefault();
  showBoard();
  void acknowledge(oldest.call_id);
}

function tickAges(): void {
  const now = Date.now();
  for (const span of board.querySelectorAll<HTMLElement>(".age[data-at]")) span.textContent = age(span.dataset.at ?? "", now);
}
