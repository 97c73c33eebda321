// The status bar: the alarm, one line for the officer (the headline, made on the Rust side from
// everything below it), and the details for the admin — core, store, routes, audio,
// notifications — behind "Details".
import { api, errorText } from "./api";
import type { Component } from "./bindings/Component";
import type { DeskStatus } from "./bindings/DeskStatus";
import type { Headline } from "./bindings/Headline";
import { byId, el } from "./dom";

const ALARM_WORDS = { off: "No active alarm", sounding: "ALARM", silent: "ALARM (no sound device)" } as const;

export function initStatus(): void {
  const toggle = byId<HTMLButtonElement>("status-details-toggle");
  toggle.addEventListener("click", toggleDetails);
  const button = byId<HTMLButtonElement>("place-test-call");
  const result = byId("test-call-result");
  button.addEventListener("click", async () => {
    button.disabled = true;
    result.textContent = "Placing test call…";
    delete result.dataset.ok;
    try {
      result.textContent = await api.placeTestCall();
      result.dataset.ok = "true";
    } catch (e) {
      result.textContent = `Test call failed: ${errorText(e)}`;
      result.dataset.ok = "false";
    } finally {
      button.disabled = false;
    }
  });
}

/** Shows or hides the details (button, or the D key). */
export function toggleDetails(): void {
  const toggle = byId<HTMLButtonElement>("status-details-toggle");
  const open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", String(open));
  byId("status-details").hidden = !open;
}

export function showStatusError(text: string): void {
  const core = byId("status-core");
  core.dataset.state = "failed";
  core.textContent = text;
  renderHeadline({ level: "down", text, action: "", also: [] });
}

function renderHeadline(h: Headline): void {
  const box = byId("status-headline");
  box.dataset.level = h.level;
  byId("headline-text").textContent = h.text;
  byId("headline-action").textContent = h.action ? `${h.action}.` : "";
  // The other problems stay out of the line: counted, and listed under Details.
  const notes = h.also.length;
  byId("headline-notes").textContent = notes === 0 ? "" : `· ${notes} more in Details`;
  byId("headline-also").replaceChildren(
    ...h.also.map((p) =>
      el("li", { text: p.action ? `${p.text}. ${p.action}.` : p.text, attrs: { "data-level": p.level } }),
    ),
  );
}

function coreText(s: DeskStatus): string {
  const held = s.held ? ` · HELD ${s.held}` : "";
  switch (s.core) {
    case "running":
      if (s.remote !== null) return `Connected to the core — ${s.core_detail}`;
      return (s.listening.length ? `Core running — listening ${s.listening.join(", ")}` : "Core running") + held;
    case "starting":
      return "Core starting…" + (s.core_detail ? ` ${s.core_detail}` : "");
    case "not-configured":
      return "Core not configured" + (s.core_detail ? ` — ${s.core_detail}` : " — choose its config file");
    case "failed":
      return `Core FAILED — ${s.core_detail || "no detail"}`;
    case "disconnected":
      return `NOT CONNECTED to the core — ${s.core_detail || "retrying"}`;
  }
}

/** A remote desk's connection: the event stream and the SIP registration, or nothing. */
function renderRemote(s: DeskStatus): void {
  const box = byId("status-remote");
  box.hidden = s.remote === null;
  if (s.remote === null) return;
  const r = s.remote;
  box.dataset.connected = String(r.connected);
  box.replaceChildren(
    el("span", { class: "remote-core", text: `Remote core ${r.api} as ${r.account}: ` }),
    el("span", { class: "remote-events", text: r.events.detail, attrs: { "data-ok": String(r.events.ok) } }),
    el("span", { text: " · " }),
    el("span", { class: "remote-sip", text: r.sip.detail, attrs: { "data-ok": String(r.sip.ok) } }),
  );
  box.classList.toggle("warn", !r.connected);
}

function component(id: string, name: string, c: Component, okText: string, failPrefix = ""): void {
  const e = byId(id);
  e.dataset.ok = String(c.ok);
  e.classList.toggle("warn", !c.ok);
  // A degraded part shows only its detail: that sentence is the warning the officer needs.
  // A detail that already names the part ("audit store /var/lib/…") is not prefixed again.
  const named = c.detail.toLowerCase().startsWith(name.toLowerCase());
  e.textContent = c.ok
    ? c.detail
      ? named
        ? c.detail
        : `${name}: ${c.detail}`
      : okText
    : failPrefix + (c.detail || `${name} not working`);
  e.title = c.detail;
}

export function renderStatus(s: DeskStatus): void {
  renderHeadline(s.headline);
  const core = byId("status-core");
  core.dataset.state = s.core;
  core.textContent = coreText(s);
  renderRemote(s);
  // A restart of the core this desk runs stays said until the desk is closed: an officer who
  // was away reads that calls may have been interrupted.
  const restarted = byId("status-restarted");
  restarted.hidden = s.restarted === null;
  restarted.classList.toggle("warn", s.restarted !== null);
  restarted.textContent = s.restarted === null ? "" : `Core restarted: ${s.restarted}`;

  component("status-store", "Audit store", s.store, "Audit store OK", "Audit store FAILING — ");
  const located = byId("status-located");
  located.hidden = s.located === null;
  if (s.located !== null) {
    const l = s.located;
    const pct = (n: bigint | number, of: bigint | number) => (Number(of) === 0 ? "–" : `${Math.round((Number(n) * 100) / Number(of))} %`);
    located.textContent =
      `Located by the wiremap (last ${l.days} days): calls ${l.calls_by_wiremap} of ${l.calls} (${pct(l.calls_by_wiremap, l.calls)}), ` +
      `HELD requests ${l.held_by_wiremap} of ${l.held} (${pct(l.held_by_wiremap, l.held)})`;
  }
  component("status-audio", "Audio", s.audio, "Audio OK");
  component("status-notifications", "Notifications", s.notifications, "Notifications OK");
  byId("status-officer").textContent = `Officer: ${s.officer}`;

  const routes = byId("status-routes");
  routes.replaceChildren(
    ...(s.routes.length
      ? s.routes.map((r) =>
          el("li", {
            class: "route-status",
            text: `${r.name}: ${r.health === "failing" ? "FAILING" : r.health}`,
            attrs: { "data-health": r.health, title: `${r.target} ${r.detail}`.trim() },
          }),
        )
      : [el("li", { text: "No routes configured" })]),
  );

  const alarm = byId("alarm-indicator");
  alarm.dataset.alarm = s.alarm;
  alarm.textContent = ALARM_WORDS[s.alarm];
  document.body.classList.toggle("alarming", s.alarm !== "off");
}
