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
