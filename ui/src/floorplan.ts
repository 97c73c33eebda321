// Where the caller is, drawn (issue 16 item 4): the ERL's floor plan with a pin at its point, on
// the alert and in the call detail; and, for a geodetic location, its coordinates with a copyable
// geo: URI (RFC 5870) that opens the machine's own map application — no internet tile service.
//
// The plan is shown only in an <img> (where an SVG runs no script and loads nothing), from the
// checked data: URL the desk hands over (`floor_plan` command; docs/desk.md). The pin is placed
// in fractions of the image, so it stays on its spot however wide the card is.
import { api, errorText } from "./api";
import type { Erl } from "./bindings/Erl";
import type { GeoPoint } from "./bindings/GeoPoint";
import { el } from "./dom";

/** Each plan's image, fetched once per plan (a plan is named by its SHA-256: it never changes). */
const images = new Map<string, Promise<string>>();
const loaded = new Map<string, string>();

function image(plan: string): Promise<string> {
  let p = images.get(plan);
  if (!p) {
    p = api.floorPlan(plan).then((img) => {
      loaded.set(plan, img.data_url);
      return img.data_url;
    });
    // A failure is not remembered: the next render asks again.
    p.catch(() => images.delete(plan));
    images.set(plan, p);
  }
  return p;
}

/** The ERL's floor plan with its pin, or nothing when it has none. */
export function floorPlanBlock(erl: Erl | null | undefined): HTMLElement | null {
  const pin = erl?.floor_plan;
  if (!erl || !pin) return null;
  const label = erl.label || "the caller's location";
  const img = el("img", { class: "floor-plan-image", attrs: { alt: `Floor plan: ${label}`, draggable: "false" } });
  const marker = el("span", { class: "floor-plan-pin", attrs: { role: "img", "aria-label": `Pin: ${label}` } });
  // CSSOM, not a style attribute: allowed by the window's CSP (style-src 'self').
  marker.style.left = `${pin.x * 100}%`;
  marker.style.top = `${pin.y * 100}%`;
  const frame = el("div", { class: "floor-plan-frame" }, img, marker);
  const note = el("div", { class: "floor-plan-note" });
  const box = el(
    "figure",
    { class: "floor-plan", attrs: { "data-plan": pin.plan, "data-x": pin.x, "data-y": pin.y, "data-loaded": "false" } },
    frame,
    note,
  );
  const show = (url: string): void => {
    img.src = url;
    box.dataset.loaded = "true";
  };
  const cached = loaded.get(pin.plan);
  if (cached) show(cached);
  else
    image(pin.plan).then(show, (e) => {
      box.dataset.loaded = "error";
      note.textContent = `Floor plan not shown: ${errorText(e)}`;
    });
  return box;
}

/** A geodetic point as text, with its geo: URI to copy or open in the machine's map application. */
export function geoLink(g: GeoPoint): HTMLElement {
  const uri = `geo:${g.latitude.toFixed(6)},${g.longitude.toFixed(6)}` + (g.radius_m !== null ? `;u=${Math.round(g.radius_m)}` : "");
  const field = el("input", { class: "geo-uri", attrs: { type: "text", readonly: "readonly", value: uri, "aria-label": "Coordinates (geo: URI)" } });
  const copy = el("button", { class: "geo-copy", text: "Copy", attrs: { type: "button" } });
  copy.addEventListener("click", () => {
    field.select();
    const done = (): void => {
      copy.textContent = "Copied";
    };
    if (navigator.clipboard) navigator.clipboard.writeText(uri).then(done, () => document.execCommand("copy") && done());
    else if (document.execCommand("copy")) done();
  });
  const open = el("a", { class: "geo-open", text: "Open in map", attrs: { href: uri } });
  return el("div", { class: "geo-link" }, field, copy, open);
}
