// Building the page. Every piece of text goes in as a text node: names,
// MACs and messages come from the network and are never parsed as HTML
// (nothing in the dashboard hands a string to the HTML parser).

/**
 * h('a', { href: '#/x', class: 'y', onclick: fn }, 'text', child, [more])
 * Attributes are set with setAttribute (values as strings); `on<event>`
 * functions become listeners; `dataset` is an object; `hidden`, `disabled`,
 * `checked`, `selected`, `required`, `open` and `value` are set as
 * properties. null, undefined and false children are skipped.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (PROPERTIES.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

const PROPERTIES = new Set(['hidden', 'disabled', 'checked', 'selected', 'required', 'open', 'value']);

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A label and a control; the label names the control for assistive technology. */
let ids = 0;
export function field(labelText, control, hint) {
  const id = control.id || `f${++ids}`;
  control.id = id;
  const hintEl = hint ? h('small', { id: `${id}-hint`, class: 'hint' }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: id }, labelText), control, hintEl);
}

export function select(options, value, props = {}) {
  return h('select', props, options.map((o) => h('option', { value: o.value, selected: String(o.value) === String(value) }, o.label)));
}

/** A table with a caption, header cells with scope, and rows of cells (strings or nodes). */
export function table(caption, headers, rows, props = {}) {
  return h('table', props,
    h('caption', null, caption),
    h('thead', null, h('tr', null, headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', null, rows));
}

/** A badge: short coloured text; the colour is decoration, the words say it. */
export function badge(text, kind, title) {
  return h('span', { class: `badge badge-${kind}`, title: title ?? null }, text);
}
