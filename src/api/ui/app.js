// The console's shell: hash routes to pages, the token field, the health dot. Each page
// module exports render(root, params, ctx) and registers what must stop when the page is
// left (timers, event streams) with ctx.
import { h, put, prose } from './dom.js';
import { get, token, setToken } from './api.js';

const ROUTES = [
  [/^sources\/new$/, 'editor', () => ({})],
  [/^sources\/([^/]+)\/edit$/, 'editor', (m) => ({ source: m[1] })],
  [/^streams\/([^/]+)\/([^/]+)$/, 'stream', (m) => ({ source: m[1], stream: m[2] })],
  [/^jobs$/, 'jobs', () => ({})],
  [/^feed$/, 'feed', () => ({})],
  [/^consumers$/, 'consumers', () => ({})],
  [/^sources$/, 'sources', () => ({})],
  [/^$/, 'sources', () => ({})],
];

const main = document.getElementById('main');

/** decodeURIComponent that leaves a malformed escape as it is. */
function decode(value) {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
let current = null;

/** What a page gets: timers and cleanups that end when the page is left. */
class Context {
  constructor() {
    this.cleanups = [];
    this.alive = true;
  }
  onLeave(fn) {
    this.cleanups.push(fn);
  }
  /** Runs fn now and then every ms while the page is shown (never two at once). */
  every(ms, fn) {
    let timer = null;
    const tick = async () => {
      if (!this.alive) return;
      try {
        await fn();
      } catch (e) {
        console.warn(e);
      }
      if (this.alive) timer = setTimeout(tick, ms);
    };
    this.onLeave(() => clearTimeout(timer));
    return tick();
  }
  leave() {
    this.alive = false;
    for (const fn of this.cleanups) {
      try {
        fn();
      } catch (e) {
        console.warn(e);
      }
    }
  }
}

async function route() {
  const path = location.hash.replace(/^#\/?/, '').replace(/\/$/, '');
  let page = null;
  let params = {};
  for (const [pattern, name, args] of ROUTES) {
    const m = pattern.exec(path);
    if (m) {
      page = name;
      params = Object.fromEntries(Object.entries(args(m)).map(([k, v]) => [k, decode(v)]));
      break;
    }
  }
  if (current) current.leave();
  const ctx = new Context();
  current = ctx;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
  if (!page) {
    put(main, h('h1', {}, 'Not found'), h('p', {}, 'The console has no page ', h('code', {}, decode(path)), '. ', h('a', { href: '#/sources' }, 'Go to the sources.')));
    return;
  }
  document.body.dataset.page = page;
  const root = h('div', { class: `page page-${page}` });
  put(main, root);
  try {
    const module = await import(`./pages/${page}.js`);
    if (ctx.alive) await module.render(root, params, ctx);
  } catch (e) {
    console.error(e);
    if (ctx.alive) put(root, h('div', { class: 'problem' }, `This page failed: ${e.message}`));
  }
}

// --- the token --------------------------------------------------------------------------

const panel = document.getElementById('token-panel');
const input = document.getElementById('token-input');
const reason = document.getElementById('token-reason');

function showToken(message) {
  panel.hidden = false;
  if (message) reason.replaceChildren(...prose(message));
  input.value = token();
  input.focus();
}

document.getElementById('token-toggle').addEventListener('click', () => {
  if (panel.hidden) showToken('An API token for this server (kept in this tab\u2019s session storage only).');
  else panel.hidden = true;
});
panel.addEventListener('submit', (event) => {
  event.preventDefault();
  setToken(input.value.trim());
  panel.hidden = true;
  updateTokenButton();
  route();
});
document.getElementById('token-forget').addEventListener('click', () => {
  setToken('');
  input.value = '';
  updateTokenButton();
  route();
});
window.addEventListener('tidemark:unauthorized', (event) => {
  const p = event.detail || {};
  showToken(`This server needs an API token: ${p.detail || 'send a bearer token'}. Give a reader token to look, an admin token to change things.`);
});

function updateTokenButton() {
  document.getElementById('token-toggle').textContent = token() ? 'Token \u2713' : 'Token';
}

// --- health -----------------------------------------------------------------------------

async function health() {
  const el = document.getElementById('health');
  try {
    await get('/readyz');
    el.textContent = 'ready';
    el.className = 'health ok';
  } catch (e) {
    el.textContent = e.problem?.status ? `not ready (${e.problem.status})` : 'unreachable';
    el.className = 'health bad';
    el.title = e.message;
  }
  setTimeout(health, 10000);
}

updateTokenButton();
window.addEventListener('hashchange', route);
route();
health();
