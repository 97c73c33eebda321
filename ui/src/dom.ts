// The only way this UI builds elements. Text goes in through textContent / Text nodes only, so
// caller-controlled strings (display names, URIs, PIDF-LO text) can never become markup.

export type Child = Node | string | null | undefined | false;

export interface ElOptions {
  class?: string;
  text?: string;
  attrs?: Record<string, string | number | null | undefined>;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  opts: ElOptions = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (opts.class) e.className = opts.class;
  if (opts.text !== undefined) e.textContent = opts.text;
  for (const [name, value] of Object.entries(opts.attrs ?? {})) {
    if (value === null || value === undefined) continue;
    // Event-handler and style attributes would run or inject code under a looser CSP.
    if (/^on/i.test(name) || name.toLowerCase() === "style") throw new Error(`el: refused attribute ${name}`);
    e.setAttribute(name, String(value));
  }
  // append(string) creates a Text node: never parsed as HTML.
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`missing #${id} in index.html`);
  return e as T;
}

export function setText(e: Element, text: string): void {
  e.textContent = text;
}

export function clear(e: Element): void {
  e.replaceChildren();
}

/** Makes `old` (in the page) look like `next` (just built) and returns the element that is now
 * in the page. Every node the two share (same tag and class, in the same order) is kept and only
 * its attributes and text change: the button under the officer's pointer stays the same button,
 * so a click whose press and release straddle a redraw still lands (a click goes to the element
 * both happened on — UI Events §3.5 — and a replaced button is in no page any more), and focus
 * and text selection stay where they were.
 *
 * What a kept element does on a click comes from `next` too: handlers are set as `onclick`
 * (never with addEventListener, which cannot be copied). A subtree marked with an equal
 * `data-keep` on both sides is kept whole: an image being fetched into it stays there. */
export function morph<T extends Element>(old: T, next: T): T {
  if (!same(old, next)) {
    old.replaceWith(next);
    return next;
  }
  patch(old, next);
  return old;
}

function same(a: Node, b: Node): boolean {
  if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) return false;
  if (!(a instanceof Element) || !(b instanceof Element)) return true;
  // An inline style is set through the CSSOM (the CSP refuses style attributes), so an element
  // whose style differs is replaced rather than patched.
  return a.getAttribute("class") === b.getAttribute("class") && a.getAttribute("style") === b.getAttribute("style");
}

/** `parent`'s children made to look like `children`, as `morph` does: for a container whose
 * controls are redrawn in place (the call bar). */
export function morphChildren(parent: Element, ...children: Child[]): void {
  patchChildren(parent, children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false).map(node));
}

const node = (c: Node | string): Node => (typeof c === "string" ? document.createTextNode(c) : c);

function patch(old: Node, next: Node): void {
  if (!(old instanceof Element) || !(next instanceof Element)) {
    if (old.nodeValue !== next.nodeValue) old.nodeValue = next.nodeValue;
    return;
  }
  const keep = next.getAttribute("data-keep");
  if (keep !== null && keep === old.getAttribute("data-keep")) return;
  for (const { name } of [...old.attributes]) if (!next.hasAttribute(name)) old.removeAttribute(name);
  for (const { name, value } of [...next.attributes]) if (old.getAttribute(name) !== value) old.setAttribute(name, value);
  if (old instanceof HTMLElement && next instanceof HTMLElement) old.onclick = next.onclick;
  patchChildren(old, [...next.childNodes]);
}

/** Each new child takes the first old one ahead that it matches (the old ones skipped over are
 * gone); one with no match is inserted. Insertions and removals in the middle of a card (a
 * failover list appearing) keep everything after them. */
function patchChildren(old: Element, next: Node[]): void {
  const olds = [...old.childNodes];
  let at = 0;
  for (const n of next) {
    let found = -1;
    for (let i = at; i < olds.length; i++)
      if (same(olds[i], n)) {
        found = i;
        break;
      }
    if (found < 0) {
      old.insertBefore(n, olds[at] ?? null);
      continue;
    }
    for (let i = at; i < found; i++) olds[i].remove();
    patch(olds[found], n);
    at = found + 1;
  }
  for (let i = at; i < olds.length; i++) olds[i].remove();
}
