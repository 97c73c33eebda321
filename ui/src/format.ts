// Times arrive as RFC 3339 UTC; officers read them in local time, always with the date.
import type { Erl } from "./bindings/Erl";
import type { GeoPoint } from "./bindings/GeoPoint";

// hourCycle h23 rather than hour12:false: some engines render midnight as "24:00" with the latter.
const FULL = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
  year: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

function parse(iso: string | null | undefined): Date | null {
  if (!iso) return null;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "Sun 22 Nov 2026, 14:03:07". A fixed order with a spelled-out month can't be misread
 *  as day/month vs month/day, whatever the machine's locale. */
export function dateTime(iso: string | null | undefined): string {
  const d = parse(iso);
  if (!d) return iso ?? "";
  const p: Partial<Record<Intl.DateTimeFormatPartTypes, string>> = {};
  for (const part of FULL.formatToParts(d)) p[part.type] = part.value;
  return `${p.weekday} ${p.day} ${p.month} ${p.year}, ${p.hour}:${p.minute}:${p.second}`;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** "14:03:07" local. */
export function clock(iso: string | null | undefined): string {
  const d = parse(iso);
  return d ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` : iso ?? "";
}

/** "(2 min ago)". */
export function age(iso: string, now = Date.now()): string {
  const d = parse(iso);
  if (!d) return "";
  const s = Math.max(0, Math.floor((now - d.getTime()) / 1000));
  if (s < 5) return "(just now)";
  if (s < 60) return `(${s} s ago)`;
  const m = Math.floor(s / 60);
  if (m < 60) return `(${m} min ago)`;
  const h = Math.floor(m / 60);
  if (h < 48) return `(${h} h ${m % 60} min ago)`;
  return `(${Math.floor(h / 24)} days ago)`;
}

const join = (parts: (string | undefined)[], sep: string) =>
  parts.map((p) => p?.trim()).filter((p): p is string => !!p).join(sep);

/** One line from the civic fields present: "1600 N Main St SW, Springfield, IL 62701, US". */
export function address(erl: Erl): string {
  const street = join([join([erl.hno, erl.hns], ""), erl.prd, erl.rd || erl.a6, erl.sts, erl.pod], " ");
  const line = join([street, erl.a3, join([erl.a1, erl.pc], " "), erl.country], ", ");
  return join([line, erl.loc], " — ");
}

export function geo(g: GeoPoint, method: string | null): string {
  const radius = g.radius_m !== null ? ` ±${Math.round(g.radius_m)} m` : "";
  const alt = g.altitude_m !== null ? `, alt ${Math.round(g.altitude_m)} m` : "";
  const how = method ? ` (${method})` : "";
  return `${g.latitude.toFixed(5)}, ${g.longitude.toFixed(5)}${radius}${alt}${how}`;
}
