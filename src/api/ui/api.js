// The console's only way to the server: the public /v1 API, with the bearer token this
// tab was given (sessionStorage: gone when the tab closes, never sent elsewhere).

import { h, prose } from './dom.js';

const TOKEN_KEY = 'tidemark.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function authHeaders() {
  const t = token();
  return t ? { authorization: `Bearer ${t}` } : {};
}

/** An error answer of the API: `problem` is its problem document (RFC 9457). */
export class ApiProblem extends Error {
  constructor(problem) {
    super(`${problem.status} ${problem.title}: ${problem.detail}`);
    this.problem = problem;
  }
}

/**
 * Calls the API. Resolves to the parsed body (null when there is none); rejects with an
 * ApiProblem for any error status (a 401 also tells the page to show the token field).
 * With `lossless`, numbers that JSON.parse would round (ids above 2^53) are kept as Raw.
 */
export async function api(method, path, body, { lossless = false, signal } = {}) {
  const headers = { accept: 'application/json', ...authHeaders() };
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiProblem({ type: 'network', title: 'No answer', status: 0, detail: `${method} ${path}: ${e.message}` });
  }
  const text = await response.text();
  let parsed = null;
  if (text) {
    try {
      parsed = lossless ? parseLossless(text) : JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (!response.ok) {
    const problem = parsed && typeof parsed === 'object' && parsed.type
      ? parsed
      : { type: 'about:blank', title: response.statusText || 'Error', status: response.status, detail: text.slice(0, 300) };
    if (response.status === 401) window.dispatchEvent(new CustomEvent('tidemark:unauthorized', { detail: problem }));
    throw new ApiProblem(problem);
  }
  return parsed;
}

export const get = (path, options) => api('GET', path, undefined, options);

/** Every item of a paged list (following `next`), up to `max` items. */
export async function all(path, params = {}, max = 5000) {
  const items = [];
  let after = '';
  do {
    const page = await get(path + query({ ...params, limit: 1000, after }));
    items.push(...page.results);
    after = page.next || '';
  } while (after && items.length < max);
  return items;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** `/v1/sources/{source}/streams/{stream}` with each name encoded, plus more segments. */
export function streamPath(source, stream, ...rest) {
  return ['/v1/sources', encodeURIComponent(source), 'streams', encodeURIComponent(stream), ...rest].join('/');
}

// --- JSON as the server wrote it --------------------------------------------------------

/** A number kept as its source text (JavaScript numbers cannot hold every JSON number). */
export class Raw {
  constructor(text) {
    this.text = text;
  }
  toJSON() {
    return Number(this.text);
  }
}

/** JSON.parse that keeps numbers which would not survive a round trip as Raw. */
export function parseLossless(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value === 'number' && context && typeof context.source === 'string' && String(value) !== context.source) {
      return new Raw(context.source);
    }
    return value;
  });
}

/** JSON text, indented (or on one line with `indent` 0); Raw numbers are written as they came. */
export function jsonText(value, indent = 2, depth = 0) {
  if (value instanceof Raw) return value.text;
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  const open = indent ? '\n' + ' '.repeat(indent * (depth + 1)) : '';
  const close = indent ? '\n' + ' '.repeat(indent * depth) : '';
  const comma = indent ? ',' + open : ', ';
  if (Array.isArray(value)) {
    if (!value.length) return '[]';
    return `[${open}${value.map((v) => jsonText(v, indent, depth + 1)).join(comma)}${close}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return '{}';
  return `{${open}${entries.map(([k, v]) => `${JSON.stringify(k)}: ${jsonText(v, indent, depth + 1)}`).join(comma)}${close}}`;
}

/** One line of JSON, for previews. */
export function jsonLine(value) {
  return jsonText(value, 0);
}

// --- showing problems -------------------------------------------------------------------

/** A problem document as the page shows it: status, type, title, detail and pointer. */
export function problemBox(problem, extra) {
  const p = problem instanceof ApiProblem ? problem.problem : problem;
  return h('div', { class: 'problem', role: 'alert' },
    h('div', { class: 'problem-head' },
      h('span', { class: 'status' }, p.status ? String(p.status) : '–'),
      h('code', { class: 'ptype' }, String(p.type ?? '')),
      h('strong', {}, String(p.title ?? ''))),
    p.detail ? h('p', { class: 'detail' }, ...prose(p.detail)) : null,
    p.pointer !== undefined ? h('p', { class: 'pointer' }, 'at ', h('code', {}, p.pointer === '' ? '(the whole body)' : String(p.pointer))) : null,
    extra || null);
}

/** Shows an error in el: a problem box for API problems, the message otherwise. */
export function showError(el, error) {
  el.replaceChildren(error instanceof ApiProblem ? problemBox(error) : h('div', { class: 'problem' }, String(error && error.message || error)));
}
