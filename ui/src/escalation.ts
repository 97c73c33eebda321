// The escalation's progress on an alert card (issue 15): the tier reached, whom it alerted and
// how each delivery went, when the next tier fires (a countdown), and that an acknowledgement
// stopped it, by whom. The board (src-tauri/src/board.rs) folds all of it from the core's
// `escalated` and `notified` events; this only draws it.
import type { ActiveCall } from "./bindings/ActiveCall";
import type { Delivery } from "./bindings/Delivery";
import { el } from "./dom";

const OUTCOME_WORDS: Record<Delivery, string> = {
  sending: "sending…",
  delivered: "delivered",
  retrying: "failed, retrying",
  failed: "FAILED",
};

/** "tier 2 in 0:45", "tier 2 due now"; `at` by the core's clock (RFC 3339). */
export function countdown(tier: number, at: string, now = Date.now()): string {
  const s = Math.ceil((Date.parse(at) - now) / 1000);
  if (!(s > 0)) return `tier ${tier} due now`;
  return `tier ${tier} in ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** The card's escalation section; nothing while no tier has been alerted. */
export function escalationBlock(c: ActiveCall): HTMLElement | false {
  const e = c.escalation;
  if (!e) return false;
  let state: string;
  let next: HTMLElement | false = false;
  if (e.stopped_by !== null) {
    state = `stopped at tier ${e.tier} of ${e.tiers}: acknowledged by ${e.stopped_by}`;
  } else if (e.next_tier_at !== null) {
    state = `tier ${e.tier} of ${e.tiers} alerted · `;
    const tier = String(e.tier + 1);
    next = el("span", {
      class: "escalation-next",
      text: countdown(e.tier + 1, e.next_tier_at),
      attrs: { "data-at": e.next_tier_at, "data-tier": tier },
    });
  } else {
    const ack = c.acknowledgements[0];
    state = `all ${e.tiers} tiers alerted` + (ack ? ` · acknowledged by ${ack.by}` : " · not acknowledged");
  }
  return el(
    "section",
    {
      class: "escalation",
      attrs: { "aria-label": "Escalation", "data-tier": e.tier, "data-stopped": String(e.stopped_by !== null) },
    },
    el("div", { class: "escalation-state" }, el("span", { class: "label", text: "Escalation: " }), state, next),
    el(
      "ul",
      { class: "escalation-targets" },
      ...e.targets.map((t) =>
        el(
          "li",
          { attrs: { "data-target": t.target, "data-outcome": t.outcome, "data-tier": t.tier, title: t.detail || null } },
          `Tier ${t.tier} · ${t.kind} ${t.channel} → ${t.target}: `,
          el("span", {
            class: "outcome",
            text: OUTCOME_WORDS[t.outcome] + (t.attempts > 1 ? ` (${t.attempts} attempts)` : ""),
          }),
        ),
      ),
    ),
  );
}

/** Moves every countdown under `root` on (once a second, with the cards' ages). */
export function tickCountdowns(root: ParentNode, now = Date.now()): void {
  for (const span of root.querySelectorAll<HTMLElement>(".escalation-next[data-at]")) {
    span.textContent = countdown(Number(span.dataset.tier), span.dataset.at ?? "", now);
  }
}
