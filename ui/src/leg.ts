// This desk's own leg in a call: Listen / Talk / Mute / Leave on the alert card, and the call bar
// that stays visible on every tab while the officer is in a call (kept in step with `desk:leg`).
import { api, errorText } from "./api";
import type { ActiveCall } from "./bindings/ActiveCall";
import type { CallLeg } from "./bindings/CallLeg";
import type { JoinInfo } from "./bindings/JoinInfo";
import type { LegMode } from "./bindings/LegMode";
import { byId, el, morphChildren } from "./dom";

let leg: CallLeg | null = null;
let join: JoinInfo | null = null;
let busy = false;
let error: { callId: string; text: string } | null = null;
let onChange: (callId: string | null) => void = () => {};

const live = (l: CallLeg | null): l is CallLeg => !!l && (l.state === "joining" || l.state === "connected");
const finished = (c: ActiveCall) => c.state === "ended" || c.state === "failed";

export function initLeg(opts: { changed: (callId: string | null) => void }): void {
  onChange = opts.changed;
}

export function setJoinInfo(j: JoinInfo): void {
  const changed = JSON.stringify(j) !== JSON.stringify(join);
  join = j;
  if (changed) onChange(null);
}

/** What the alert card shows of a leg: everything but the meter, which only the call bar shows
 * (it changes four times a second; redrawing the card that often would fight the officer's clicks). */
const cardView = (l: CallLeg | null) =>
  l && JSON.stringify([l.call_id, l.state, l.mode, l.muted, l.detail, l.speaker, l.microphone]);

export function update(l: CallLeg | null): void {
  const before = leg;
  leg = l;
  if (cardView(before) === cardView(l)) {
    // Only the level changed: update the meter in place. Rebuilding the bar four times a second
    // would swap its buttons between an officer's mouse-down and mouse-up and lose the click.
    if (l) updateLevel(l);
    return;
  }
  renderBar();
  if (before && before.call_id !== l?.call_id) onChange(before.call_id);
  if (l) onChange(l.call_id);
}

/** Talk is offered where the policy is two-way and the account may talk; the core decides anyway. */
export function talkAllowed(c: ActiveCall): boolean {
  return !!join?.may_talk && join.two_way_policies.includes(c.policy);
}

async function run(callId: string, action: () => Promise<unknown>): Promise<void> {
  if (busy) return;
  busy = true;
  error = null;
  onChange(callId);
  try {
    const r = await action();
    if (r && typeof r === "object" && "state" in r) update(r as CallLeg);
  } catch (e) {
    error = { callId, text: errorText(e) };
  } finally {
    busy = false;
    onChange(callId);
    renderBar();
  }
}

const joinAs = (c: ActiveCall, mode: LegMode) => run(c.call_id, () => api.joinCall(c.call_id, mode));

/** The L and T keys on call `c`: join it in `mode`, or switch the leg already in it. What the
 * buttons would refuse, the keys refuse too (a reason comes back for the officer). */
export function byKey(c: ActiveCall, mode: LegMode): string | null {
  if (busy) return null;
  const mine = leg && leg.call_id === c.call_id && live(leg) ? leg : null;
  if (mine) {
    if (mine.state !== "connected" || mine.mode === mode) return null;
    if (mode === "talk" && !join?.may_talk) return "This desk account may only listen";
    void run(c.call_id, () => api.setLegMode(mode));
    return null;
  }
  if (c.test_call || finished(c)) return "This call cannot be joined";
  if (!join?.desk) return join?.detail ?? "Joining calls is not available";
  if (live(leg)) return "This desk is in another call: leave it first";
  if (mode === "talk" && !talkAllowed(c)) return "Talk is not allowed in this call: press L to listen";
  void joinAs(c, mode);
  return null;
}

function button(cls: string, text: string, click: () => void, disabled = false, title?: string): HTMLButtonElement {
  const b = el("button", { class: cls, text, attrs: { type: "button", title } });
  b.disabled = disabled || busy;
  b.onclick = click;
  return b;
}

/** The leg's controls for one call's alert card. */
export function controls(c: ActiveCall): HTMLElement | false {
  if (c.test_call) return false;
  const box = el("div", { class: "leg-controls", attrs: { "data-call-id": c.call_id } });
  const mine = leg && leg.call_id === c.call_id ? leg : null;
  if (live(mine)) {
    box.append(legState(mine, false), ...legButtons(mine));
  } else if (!finished(c)) {
    if (!join?.desk) {
      box.append(el("span", { class: "leg-unavailable", text: join?.detail ?? "Joining calls is not available" }));
    } else {
      const other = live(leg) ? "This desk is in another call: leave it first" : undefined;
      box.append(
        button("join-listen", "Listen", () => void joinAs(c, "listen"), !!other, other ?? "Hear the caller and the operator; nobody hears you"),
      );
      if (talkAllowed(c))
        box.append(button("join-talk", "Talk", () => void joinAs(c, "talk"), !!other, other ?? "Join the call as a full party"));
    }
    if (mine) box.append(legState(mine, false));
  } else if (mine) {
    box.append(legState(mine, false));
  }
  if (error && error.callId === c.call_id) box.append(el("div", { class: "leg-error", text: error.text, attrs: { role: "alert" } }));
  return box.childNodes.length ? box : false;
}

const levelOf = (l: CallLeg) => Math.max(0, Math.min(100, Math.round(((l.level_dbfs + 60) / 60) * 100)));
const hearingText = (l: CallLeg) =>
  l.hearing ? `Call audio arriving (${Math.round(l.level_dbfs)} dBFS)` : "No call audio arriving";

function updateLevel(l: CallLeg): void {
  const bar = byId("call-bar");
  const state = bar.querySelector<HTMLElement>(".leg-state");
  const meter = bar.querySelector<HTMLMeterElement>(".leg-meter");
  const hearing = bar.querySelector(".leg-hearing");
  if (!state || !meter || !hearing) return renderBar();
  state.dataset.hearing = String(l.hearing);
  meter.value = levelOf(l);
  hearing.textContent = hearingText(l);
}

function legState(l: CallLeg, meter = true): HTMLElement {
  const level = levelOf(l);
  return el(
    "div",
    {
      class: "leg-state",
      attrs: {
        "data-call-id": l.call_id,
        "data-state": l.state,
        "data-mode": l.mode,
        "data-muted": String(l.muted),
        "data-hearing": String(l.hearing),
      },
    },
    el("div", { class: "leg-detail", text: l.state === "joining" ? l.detail : `${l.desk}: ${l.detail}` }),
    meter &&
      l.state === "connected" &&
      el(
        "div",
        { class: "leg-audio" },
        el("meter", { class: "leg-meter", attrs: { min: 0, max: 100, low: 20, value: level, "aria-label": "Call audio level" } }),
        el("span", {
          class: "leg-hearing",
          text: hearingText(l),
        }),
      ),
    l.state === "connected" &&
      el("div", { class: "leg-speaker", text: l.speaker.detail, attrs: { "data-ok": String(l.speaker.ok) } }),
    l.state === "connected" &&
      l.microphone &&
      el("div", { class: "leg-microphone", text: l.microphone.detail, attrs: { "data-ok": String(l.microphone.ok) } }),
  );
}

function legButtons(l: CallLeg): HTMLButtonElement[] {
  if (l.state !== "connected") return [];
  const out: HTMLButtonElement[] = [];
  const call = l.call_id;
  if (l.mode === "listen") {
    out.push(button("leg-talk", "Talk", () => void run(call, () => api.setLegMode("talk")), !join?.may_talk,
      join?.may_talk ? "Become a full party in the call" : "This desk account may only listen"));
  } else {
    out.push(button("leg-listen", "Listen only", () => void run(call, () => api.setLegMode("listen"))));
    out.push(button("leg-mute", l.muted ? "Unmute" : "Mute", () => void run(call, () => api.muteLeg(!l.muted))));
  }
  out.push(button("leg-leave", "Leave", () => void run(call, () => api.leaveCall()), false, "Leave the call; it goes on"));
  return out;
}

/** The call bar under the status bar: the officer's leg, whichever tab is open. */
function renderBar(): void {
  const bar = byId("call-bar");
  bar.hidden = !leg;
  if (!leg) return bar.replaceChildren();
  bar.dataset.state = leg.state;
  bar.dataset.mode = leg.mode;
  const close = !live(leg) && button("leg-close", "Close", () => update(null));
  // Patched in place: Mute or Leave pressed as the leg changes still lands (dom.ts, `morph`).
  morphChildren(
    bar,
    el("strong", { class: "call-bar-title", text: live(leg) ? (leg.mode === "talk" ? "IN CALL — TALKING" : "IN CALL — LISTENING") : "Call leg" }),
    legState(leg),
    ...legButtons(leg),
    ...(close ? [close] : []),
  );
}
