// Building the page without innerHTML: every string from the API becomes a text node
// or an attribute value, never markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'on') {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (name === 'style') {
      // CSSOM, not a style attribute: the page's policy forbids inline style attributes.
      Object.assign(el.style, value);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (name === 'value' || name === 'checked' || name === 'disabled' || name === 'hidden' || name === 'selected') {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children: nodes as they are, strings and numbers as text; null, false and undefined are skipped. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h('a', {href: '#/jobs', class: 'x'}, 'text', otherNode). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** The server's prose (problem details): `quoted` spans as code, the rest as text. */
export function prose(text) {
  return String(text).split('`').map((part, i) => (i % 2 ? h('code', {}, part) : part));
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** Replaces el's children. */
export function put(el, ...children) {
  return append(clear(el), children);
}

/** A `#/...` link built from path segments, each encoded. */
export function href(...segments) {
  return '#/' + segments.map(encodeURIComponent).join('/');
}

// --- formatting ----------------------------------------------------------------------

export function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  const v = Math.abs(value);
  if (v < 1) return `${Math.round(value * 1000)} ms`;
  if (v < 60) return `${value < 10 ? value.toFixed(1) : Math.round(value)} s`;
  const two = (big, bigUnit, small, smallUnit) => (small ? `${big} ${bigUnit} ${small} ${smallUnit}` : `${big} ${bigUnit}`);
  if (v < 3600) return two(Math.floor(v / 60), 'min', Math.round(v % 60), 's');
  if (v < 86400) return two(Math.floor(v / 3600), 'h', Math.round((v % 3600) / 60), 'min');
  return two(Math.floor(v / 86400), 'd', Math.round((v % 86400) / 3600), 'h');
}

export function ago(iso) {
  if (!iso) return '–';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  const d = (Date.now() - t) / 1000;
  if (d < 2) return 'just now';
  return `${seconds(Math.round(d))} ago`;
}

/** An ISO time as local `HH:MM:SS`, with the full time as the element's title. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '–');
  const d = new Date(iso);
  const text = Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
  return h('time', { datetime: iso, title: iso }, text);
}

export function count(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US');
}

export function duration(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return (end - Date.parse(job.started_at)) / 1000;
}

export function schedule(spec) {
  if (!spec) return 'manual';
  const clock = (c) => c.every_seconds !== undefined ? `every ${seconds(c.every_seconds)}`
    : c.cron !== undefined ? `cron ${c.cron}` : JSON.stringify(c);
  return spec.reconcile ? `${clock(spec)}; reconcile ${clock(spec.reconcile)}` : clock(spec);
}

/** A badge for a job status (or any short state word), coloured as `kind`. */
export function badge(state, kind = state, title = undefined) {
  return h('span', { class: `badge b-${String(kind).replace(/[^a-z_-]/g, '')}`, title }, state);
}

/** Short text, cut with an ellipsis; the whole text is the title. */
export function cut(text, max = 80) {
  const str = String(text);
  if (str.length <= max) return h('span', {}, str);
  return h('span', { title: str }, str.slice(0, max - 1) + '…');
}

/** A button that runs an async action, disabled while it runs. */
export function action(label, run, attrs = {}) {
  const button = h('button', { type: 'button', ...attrs }, label);
  button.addEventListener('click', async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      await run(button);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** A message next to a control, gone after a while. */
export function note(el, text, kind = 'ok') {
  const message = h('span', { class: `flash ${kind}`, role: 'status' }, text);
  put(el, message);
  setTimeout(() => message.remove(), 10000);
}
