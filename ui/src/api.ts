// Typed wrappers over the desk's Tauri commands and events (docs/desk-api.md).
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type { ActiveCall } from "./bindings/ActiveCall";
import type { CallDetail } from "./bindings/CallDetail";
import type { CallSummary } from "./bindings/CallSummary";
import type { DeskError } from "./bindings/DeskError";
import type { DeskStatus } from "./bindings/DeskStatus";
import type { CallLeg } from "./bindings/CallLeg";
import type { HistoryFilter } from "./bindings/HistoryFilter";
import type { LegMode } from "./bindings/LegMode";
import type { FloorPlanImage } from "./bindings/FloorPlanImage";
import type { Playback } from "./bindings/Playback";
import type { Settings } from "./bindings/Settings";

export const inDeskApp = (): boolean => "__TAURI_INTERNALS__" in window;

const NOT_IN_APP = "not running inside the desk app";

function call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
  if (!inDeskApp()) return Promise.reject(NOT_IN_APP);
  return invoke<T>(cmd, args);
}

/** A command's rejection: a `DeskError` (a machine-readable `kind` and the officer's `message`). */
export function isDeskError(e: unknown): e is DeskError {
  return typeof e === "object" && e !== null && "kind" in e && typeof (e as { message?: unknown }).message === "string";
}

/** The officer's text of a rejection: a `DeskError`'s message; anything else turned into text. */
export function errorText(e: unknown): string {
  if (isDeskError(e)) return e.message;
  if (typeof e === "string") return e;
  if (e instanceof Error) return e.message;
  try {
    return JSON.stringify(e);
  } catch {
    return String(e);
  }
}

export const api = {
  getStatus: () => call<DeskStatus>("get_status"),
  getActiveCalls: () => call<ActiveCall[]>("get_active_calls"),
  acknowledge: (callId: string) => call<ActiveCall>("acknowledge", { callId }),
  dismiss: (callId: string) => call<void>("dismiss", { callId }),
  searchHistory: (filter: HistoryFilter) => call<CallSummary[]>("search_history", { filter }),
  callDetail: (callId: string) => call<CallDetail>("call_detail", { callId }),
  exportHistoryCsv: (filter: HistoryFilter) => call<string>("export_history_csv", { filter }),
  getSettings: () => call<Settings>("get_settings"),
  saveSettings: (settings: Settings) => call<Settings>("save_settings", { settings }),
  placeTestCall: () => call<string>("place_test_call"),
  /** `pageMs`: from the event reaching the page to the paint (the rest of the time is the
   * way from the desk to the page). */
  alertShown: (callId: string, seq: number, pageMs: number, domMs: number) =>
    call<void>("alert_shown", { callId, seq, pageMs, domMs }),
  pageReady: (shown: string[]) => call<number>("page_ready", { shown }),
  joinCall: (callId: string, mode: LegMode) => call<CallLeg>("join_call", { callId, mode }),
  getLeg: () => call<CallLeg | null>("get_leg"),
  setLegMode: (mode: LegMode) => call<void>("set_leg_mode", { mode }),
  muteLeg: (muted: boolean) => call<void>("mute_leg", { muted }),
  leaveCall: () => call<void>("leave_call"),
  playRecording: (callId: string) => call<Playback>("play_recording", { callId }),
  stopPlayback: () => call<Playback | null>("stop_playback"),
  floorPlan: (plan: string) => call<FloorPlanImage>("floor_plan", { plan }),
};

function on<T>(event: string, handler: (payload: T) => void): Promise<UnlistenFn> {
  if (!inDeskApp()) return Promise.resolve(() => {});
  return listen<T>(event, (e) => handler(e.payload));
}

export const events = {
  alert: (h: (call: ActiveCall) => void) => on<ActiveCall>("desk:alert", h),
  alertRemoved: (h: (callId: string) => void) => on<string>("desk:alert-removed", h),
  status: (h: (status: DeskStatus) => void) => on<DeskStatus>("desk:status", h),
  leg: (h: (leg: CallLeg) => void) => on<CallLeg>("desk:leg", h),
  playback: (h: (p: Playback) => void) => on<Playback>("desk:playback", h),
};
