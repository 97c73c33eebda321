// Where the caller is, drawn (issue 16 item 4): the ERL's floor plan with a pin at its point, on
// the alert and in the call detail; for a geodetic location, the smallest site map the core found
// for the point (`location.site_map`) with a pin and the uncertainty ellipse, and its coordinates
// with a copyable geo: URI (RFC 5870) that opens the machine's own map application — no internet
// tile service anywhere.
//
// Plans and maps are shown only in an <img> (where an SVG runs no script and loads nothing), from
// the checked data: URL the desk hands over (`floor_plan` command; docs/desk.md). Pins are placed
// in fractions of the image, so they stay on their spot however wide the card is.
import { api, errorText } from "./api";
import type { Erl } from "./bindings/Erl";
import type { GeoPoint } from "./bindings/GeoPoint";
import type { LocationSnapshot } from "./bindings/LocationSnapshot";
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

/** An image from the store (a floor plan or a site map) in `box`'s frame, once fetched;
 * `box.dataset.loaded` says how far it got ("false", "true", "error"), `note` why not. */
function showImage(box: HTMLElement, img: HTMLImageElement, note: HTMLElement, plan: string, what: string): void {
  const show = (url: string): void => {
    img.src = url;
    box.dataset.loaded = "true";
  };
  const cached = loaded.get(plan);
  if (cached) show(cached);
  else
    image(plan).then(show, (e) => {
      box.dataset.loaded = "error";
      note.textContent = `${what} not shown: ${errorText(e)}`;
    });
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
    {
      class: "floor-plan",
      // Kept whole across redraws while the plan and pin stay (its image may still be loading).
      attrs: { "data-plan": pin.plan, "data-x": pin.x, "data-y": pin.y, "data-loaded": "false", "data-keep": `${pin.plan} ${pin.x} ${pin.y} ${label}` },
    },
    frame,
    note,
  );
  showImage(box, img, note, pin.plan, "Floor plan");
  return box;
}

/** A geodetic location drawn on its site map: the map with a pin on the point and the
 * uncertainty circle (an ellipse when the image is drawn stretched); "No site map covers this
 * point" when the core found none; nothing without a point. */
export function siteMapBlock(loc: LocationSnapshot | null | undefined): HTMLElement | null {
  const g = loc?.geo;
  if (!loc || !g) return null;
  const pin = loc.site_map;
  if (!pin) return el("div", { class: "site-map-none", text: "No site map covers this point" });
  const name = pin.map;
  const radius = g.radius_m !== null ? ` ±${Math.round(g.radius_m)} m` : "";
  const img = el("img", { class: "site-map-image", attrs: { alt: `Site map: ${name}`, draggable: "false" } });
  const marker = el("span", { class: "site-map-pin", attrs: { role: "img", "aria-label": `Caller's position${radius}` } });
  // CSSOM, not a style attribute: allowed by the window's CSP (style-src 'self').
  marker.style.left = `${pin.x * 100}%`;
  marker.style.top = `${pin.y * 100}%`;
  const parts: HTMLElement[] = [img];
  if (pin.radius_x !== null && pin.radius_y !== null) {
    const area = el("span", { class: "site-map-uncertainty", attrs: { role: "img", "aria-label": `Uncertainty${radius}` } });
    // The frame clips an ellipse larger than the map; bounded so that a city-sized uncertainty
    // on a campus map stays a sane size for the layout engine.
    const rx = Math.min(pin.radius_x, 10);
    const ry = Math.min(pin.radius_y, 10);
    area.style.left = `${(pin.x - rx) * 100}%`;
    area.style.top = `${(pin.y - ry) * 100}%`;
    area.style.width = `${rx * 200}%`;
    area.style.height = `${ry * 200}%`;
    parts.push(area);
  }
  parts.push(marker);
  const frame = el("div", { class: "site-map-frame" }, ...parts);
  const note = el("div", { class: "floor-plan-note" });
  const box = el(
    "figure",
    {
      class: "site-map",
      attrs: {
        "data-map": name,
        "data-plan": pin.plan,
        "data-x": pin.x,
        "data-y": pin.y,
        "data-rx": pin.radius_x,
        "data-ry": pin.radius_y,
        "data-loaded": "false",
        // Kept whole across redraws while the map and pin stay (its image may still be loading).
        "data-keep": `${name} ${pin.plan} ${pin.x} ${pin.y} ${pin.radius_x} ${pin.radius_y} ${radius}`,
      },
    },
    frame,
    el("figcaption", { class: "site-map-name", text: `Site map: ${name}` }),
    note,
  );
  showImage(box, img, note, pin.plan, "Site map");
  return box;
}

/** A geodetic point as text, with its geo: URI to copy or open in the machine's map application. */
export function geoLink(g: GeoPoint): HTMLElement {
  const uri = `geo:${g.latitude.toFixed(6)},${g.longitude.toFixed(6)}` + (g.radius_m !== null ? `;u=${Math.round(g.radius_m)}` : "");
  const field = el("input", { class: "geo-uri", attrs: { type: "text", readonly: "readonly", value: uri, "aria-label": "Coordinates (geo: URI)" } });
  const copy = el("button", { class: "geo-copy", text: "Copy", attrs: { type: "button" } });
  copy.onclick = () => {
    field.select();
    const done = (): void => {
      copy.textContent = "Copied";
    };
    if (navigator.clipboard) navigator.clipboard.writeText(uri).then(done, () => document.execCommand("copy") && done());
    else if (document.execCommand("copy")) done();
  };
  const open = el("a", { class: "geo-open", text: "Open in map", attrs: { href: uri } });
  // Kept whole across redraws while the point stays ("Copied" stays said).
  return el("div", { class: "geo-link", attrs: { "data-keep": uri } }, field, copy, open);
}
