// Settings tab, theme, and the first-run setup panel (which saves settings too).
import { api, errorText } from "./api";
import type { DeskStatus } from "./bindings/DeskStatus";
import type { Settings } from "./bindings/Settings";
import type { Theme } from "./bindings/Theme";
import { byId, el } from "./dom";

const THEME_KEY = "sosdesk-theme";
const isTheme = (v: unknown): v is Theme =>
  v === "system" || v === "light" || v === "dark" || v === "high-contrast";

export function applyTheme(t: Theme): void {
  document.documentElement.dataset.theme = t;
  // Remembered locally so the next start paints in the right theme before settings load.
  try {
    localStorage.setItem(THEME_KEY, t);
  } catch {
    /* storage unavailable: theme still applies for this session */
  }
}

export function applyStoredTheme(): void {
  try {
    const t = localStorage.getItem(THEME_KEY);
    if (isTheme(t)) document.documentElement.dataset.theme = t;
  } catch {
    /* ignore */
  }
}

const officer = () => byId<HTMLInputElement>("settings-officer");
const theme = () => byId<HTMLSelectElement>("settings-theme");
const config = () => byId<HTMLInputElement>("settings-config");
const account = () => byId<HTMLSelectElement>("settings-desk-account");
let savedAccount: string | null = null;

export function fillSettings(s: Settings): void {
  officer().value = s.officer_name;
  theme().value = s.theme;
  config().value = s.config_path ?? "";
  savedAccount = s.desk_account;
  account().value = s.desk_account ?? "";
  applyTheme(s.theme);
}

/** The config's desk accounts (user names only: passwords never leave the Rust side). */
export function fillAccounts(s: DeskStatus): void {
  const select = account();
  const names = ["", ...s.join.accounts];
  const have = [...select.options].map((o) => o.value);
  if (JSON.stringify(have) !== JSON.stringify(names)) {
    select.replaceChildren(
      ...names.map((n) => el("option", { text: n === "" ? "the config's first account" : n, attrs: { value: n } })),
    );
    select.value = savedAccount ?? "";
  }
  byId("settings-join-detail").textContent = s.join.detail;
}

export function initSettings(): void {
  const result = byId("settings-result");
  theme().addEventListener("change", () => {
    if (isTheme(theme().value)) applyTheme(theme().value as Theme);
  });
  byId<HTMLFormElement>("settings-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const save = byId<HTMLButtonElement>("settings-save");
    const t = theme().value;
    save.disabled = true;
    result.textContent = "Saving…";
    try {
      const saved = await api.saveSettings({
        officer_name: officer().value.trim(),
        theme: isTheme(t) ? t : "system",
        config_path: config().value.trim() || null,
        desk_account: account().value || null,
      });
      fillSettings(saved);
      result.textContent = "Saved";
      result.dataset.ok = "true";
    } catch (e) {
      result.textContent = `Not saved: ${errorText(e)}`;
      result.dataset.ok = "false";
    } finally {
      save.disabled = false;
    }
  });
  initSetup();
}

// ---- first run ----

let setupEdited = false;

function initSetup(): void {
  const input = byId<HTMLInputElement>("setup-config");
  const start = byId<HTMLButtonElement>("setup-start");
  const result = byId("setup-result");
  input.addEventListener("input", () => (setupEdited = true));
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.ctrlKey) start.click();
  });
  start.addEventListener("click", async () => {
    const path = input.value.trim();
    if (!path) {
      result.textContent = "Enter the path to the core's config file.";
      return;
    }
    start.disabled = true;
    result.textContent = "Saving…";
    try {
      const current = await api.getSettings();
      fillSettings(await api.saveSettings({ ...current, config_path: path }));
      result.textContent = "Saved — starting the core…";
      setupEdited = false;
    } catch (e) {
      result.textContent = `Could not save: ${errorText(e)}`;
    } finally {
      start.disabled = false;
    }
  });
}

export function updateSetup(s: DeskStatus): void {
  const show = s.core === "not-configured" || s.core === "failed";
  byId("setup").hidden = !show;
  byId("setup-detail").textContent = s.core_detail;
  const input = byId<HTMLInputElement>("setup-config");
  if (!setupEdited && s.config_path) input.value = s.config_path;
}
