#!/usr/bin/env node
// Drives tidemark's console (/ui) in Debian's headless Chromium, as an operator would, with
// every request that does not go to this machine's loopback aborted. Starts its own
// `tidemark sandbox` and `tidemark serve` (fresh SQLite file in a temp dir, ephemeral
// loopback ports), checks the served assets, then in the browser: registers a source
// through the spec editor, syncs it, watches the job finish, browses records, sets and
// resets a cursor, submits invalid specs and finds each problem at its field, sees a live
// change arrive on the feed page, sees the consumers page, and signs in with a token on
// a server that needs one. Screenshots go to docs/console-*.png. Bounded in time; exits
// non-zero on any failure. See docs/console.md.
//
//   node tools/console-test/run.mjs            (after cargo build; npm ci in tools/console-test)
//
// Environment: TIDEMARK_BIN (default target/debug/tidemark), CHROMIUM (default
// /usr/bin/chromium), CONSOLE_TEST_TIMEOUT (seconds, default 240), CONSOLE_TEST_SHOTS
// (directory for the screenshots, default docs/; empty: none).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.TIDEMARK_BIN || path.join(ROOT, 'target/debug/tidemark');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_S = Number(process.env.CONSOLE_TEST_TIMEOUT || 240);
const SHOTS = process.env.CONSOLE_TEST_SHOTS ?? path.join(ROOT, 'docs');
const STEP_MS = 20000; // the longest any one thing on a page may take to show
const ADMIN = 'console-test-admin-token';

const started = Date.now();
const children = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemark-console-'));
let browser = null;
let passed = 0;

const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const log = (msg) => console.log(`[${elapsed()}] ${msg}`);

function cleanup() {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  try {
    fs.rmSync(tmp, { recursive: true, force: true });
  } catch {}
}
process.on('exit', cleanup);

const deadline = setTimeout(async () => {
  console.error(`console-test: FAILED: the run took longer than ${TIMEOUT_S}s`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}, TIMEOUT_S * 1000);

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// --- the processes -------------------------------------------------------------------

/** Starts `tidemark args`, resolves to its address once it logs `message` (JSON logs). */
function start(name, args, message, env = {}) {
  const childEnv = { ...process.env, TIDEMARK_LOG: 'info', TIDEMARK_LOG_FORMAT: 'json', ...env };
  delete childEnv.TIDEMARK_API_TOKENS;
  delete childEnv.DATABASE_URL;
  delete childEnv.TIDEMARK_BIND;
  Object.assign(childEnv, env);
  const child = spawn(BIN, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const logFile = fs.createWriteStream(path.join(tmp, `${name}.log`));
  child.stderr.pipe(logFile);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 30s`)), 30000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code} before it served`));
    });
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      logFile.write(line + '\n');
      try {
        const entry = JSON.parse(line);
        if (entry.fields?.message === message && entry.fields.addr) {
          clearTimeout(timer);
          resolve(`http://${entry.fields.addr}`);
        }
      } catch {}
    });
  });
}

async function http(method, url, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, json: () => JSON.parse(text) };
}

/** Polls `probe` until it returns a value (not null), for STEP_MS at most. */
async function eventually(what, probe) {
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// --- the served assets ----------------------------------------------------------------

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
};

function walk(dir, root = dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name), root) : [path.relative(root, path.join(dir, e.name)).split(path.sep).join('/')]);
}

async function checkAssets(api) {
  const files = walk(path.join(ROOT, 'src/api/ui')).filter((f) => f !== 'index.html');
  const examples = fs.readdirSync(path.join(ROOT, 'examples/sources')).filter((f) => f.endsWith('.json')).map((f) => `examples/${f}`);
  const paths = ['/ui', '/ui/', ...[...files, ...examples].map((f) => `/ui/${f}`)];
  for (const p of paths) {
    const r = await http('GET', api + p);
    assert(r.status === 200, `GET ${p}: ${r.status}`);
    const ext = p === '/ui' || p === '/ui/' ? '.html' : path.extname(p);
    assert(r.headers.get('content-type') === TYPES[ext], `GET ${p}: content-type ${r.headers.get('content-type')}`);
    assert(r.headers.get('cache-control') === 'no-cache', `GET ${p}: cache-control ${r.headers.get('cache-control')}`);
    const csp = r.headers.get('content-security-policy') || '';
    assert(csp.includes("default-src 'none'") && csp.includes("script-src 'self'") && !csp.includes('unsafe'), `GET ${p}: CSP ${csp}`);
    assert(r.headers.get('x-content-type-options') === 'nosniff', `GET ${p}: no nosniff`);
    const onDisk = p.startsWith('/ui/examples/')
      ? fs.readFileSync(path.join(ROOT, 'examples/sources', path.basename(p)), 'utf8')
      : fs.readFileSync(path.join(ROOT, 'src/api/ui', ext === '.html' ? 'index.html' : p.slice(4)), 'utf8');
    assert(r.text === onDisk, `GET ${p}: the body differs from the file (rebuild the binary?)`);
    const etag = r.headers.get('etag');
    const again = await http('GET', api + p, undefined, { 'if-none-match': etag });
    assert(again.status === 304 && again.text === '', `GET ${p} with its ETag: ${again.status}`);
  }
  const missing = await http('GET', `${api}/ui/nothing-here.js`);
  assert(missing.status === 404 && missing.headers.get('content-type') === 'application/problem+json', `GET /ui/nothing-here.js: ${missing.status}`);
  const doc = (await http('GET', `${api}/openapi.json`)).json();
  assert(!Object.keys(doc.paths).some((p) => p.startsWith('/ui')), 'the OpenAPI document lists /ui');
  return paths.length;
}

// --- the browser ----------------------------------------------------------------------

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);
const blocked = [];
const pageErrors = [];

async function newPage() {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  page.setDefaultTimeout(STEP_MS);
  await page.setRequestInterception(true);
  page.on('request', (request) => {
    const url = new URL(request.url());
    if ((url.protocol === 'http:' && LOOPBACK.has(url.hostname)) || url.protocol === 'data:') request.continue();
    else {
      blocked.push(request.url());
      request.abort('blockedbyclient');
    }
  });
  page.on('pageerror', (e) => pageErrors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) pageErrors.push(`CSP: ${m.text()}`);
    else if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (400|401|404|422)/.test(m.text())) {
      pageErrors.push(`console error: ${m.text()}`);
    }
  });
  page.on('dialog', (dialog) => dialog.accept());
  return page;
}

async function shot(page, name, { fullPage = false } = {}) {
  if (!SHOTS) return;
  if (fullPage) await page.evaluate(() => window.scrollTo(0, 0));
  await new Promise((r) => setTimeout(r, 300)); // let the last paint settle
  await page.screenshot({ path: path.join(SHOTS, `console-${name}.png`), fullPage });
}

/** The text of the first element matching selector. */
const text = (page, selector) => page.$eval(selector, (el) => el.textContent);

/** Waits until some element matching selector has text matching re. */
async function waitText(page, selector, re, what) {
  try {
    await page.waitForFunction((sel, source, flags) => {
      const pattern = new RegExp(source, flags);
      return [...document.querySelectorAll(sel)].some((el) => pattern.test(el.textContent));
    }, { timeout: STEP_MS }, selector, re.source, re.flags);
  } catch {
    const seen = await page.$$eval(selector, (els) => els.map((el) => el.textContent.trim().slice(0, 200))).catch(() => []);
    throw new Error(`${what}: no ${selector} matching ${re} within ${STEP_MS / 1000}s (saw ${JSON.stringify(seen.slice(0, 5))})`);
  }
}

async function step(name, fn) {
  const t = Date.now();
  await fn();
  passed += 1;
  log(`ok ${passed} - ${name} (${((Date.now() - t) / 1000).toFixed(1)}s)`);
}

async function main() {
  assert(fs.existsSync(BIN), `no tidemark binary at ${BIN}: run cargo build first`);
  assert(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium`);
  const sandbox = await start('sandbox', ['sandbox', '--port', '0', '--records', '300'], 'sandbox serving');
  const api = await start('serve', ['serve', '--bind', '127.0.0.1:0', '--database-url', `sqlite://${tmp}/console.db`], 'serving');
  log(`sandbox at ${sandbox}, tidemark at ${api}`);

  await step('every asset of /ui is served with its type, no-cache, an ETag and a self-only CSP; /ui is not in the OpenAPI document', async () => {
    const n = await checkAssets(api);
    log(`   ${n} paths checked`);
  });

  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: path.join(tmp, 'chromium'),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage', '--disable-default-apps', '--disable-extensions'],
  });
  log(`browser: ${await browser.version()}`);
  const page = await newPage();

  await step('the console opens on an empty server', async () => {
    await page.goto(`${api}/ui`);
    await waitText(page, '.page-sources .empty-state', /No source is registered yet/, 'sources page');
    await waitText(page, '#health', /ready/, 'health');
  });

  const example = fs.readFileSync(path.join(ROOT, 'examples/sources/insales.json'), 'utf8');
  const spec = example.replace('http://127.0.0.1:9000', sandbox);
  assert(spec !== example, 'examples/sources/insales.json no longer names http://127.0.0.1:9000');

  await step('register examples/sources/insales.json (pointed at the sandbox) in the spec editor', async () => {
    await page.goto(`${api}/ui#/sources/new`);
    await page.waitForSelector('#spec-example');
    await page.select('#spec-example', 'insales');
    await page.waitForFunction((want) => document.querySelector('#spec').value === want, {}, example);
    await page.locator('#spec').fill(spec);
    await page.click('#spec-submit');
    await waitText(page, '#spec-result', /Registered insales with 1 stream: products/, 'registration');
  });

  await step('sync it from the sources page; its state, lag and schedule show', async () => {
    await page.goto(`${api}/ui#/sources`);
    await waitText(page, 'tr.stream-row', /products.*keyset.*every 1 min/, 'stream row');
    const row = 'tr.stream-row[data-stream="insales/products"]';
    // The registration's schedule queues a job at once; while it is queued or running a
    // sync returns that job instead of queueing one, so the button is clicked after it.
    await waitText(page, row, /succeeded/, 'the schedule job');
    await page.click(`${row} button`);
    await waitText(page, '.flash-area', /Job [0-9a-f]{8} for insales\/products/, 'sync flash');
    await waitText(page, row, /up to date/, 'stream state');
    await waitText(page, row, /succeeded/, 'last job');
  });

  await step('a failed job shows its outcome, error title and detail on the sources page', async () => {
    // Two more examples, and a source whose upstream path does not exist.
    for (const name of ['pos', 'carrot']) {
      const body = JSON.parse(fs.readFileSync(path.join(ROOT, `examples/sources/${name}.json`), 'utf8').replace('http://127.0.0.1:9000', sandbox));
      const r = await http('POST', `${api}/v1/sources`, body);
      assert(r.status === 201, `registering ${name}: ${r.status} ${r.text}`);
    }
    const legacy = {
      name: 'legacy', base_url: sandbox,
      streams: [{ name: 'customers', request: { path: '/legacy/customers.json' }, records: { path: '', key: '/id' },
        pagination: { type: 'offset', offset_param: 'offset', limit_param: 'limit', limit: 100 }, schedule: { every_seconds: 300 } }],
    };
    assert((await http('POST', `${api}/v1/sources`, legacy)).status === 201, 'registering legacy');
    const row = 'tr.stream-row[data-stream="legacy/customers"]';
    await waitText(page, row, /failed.*Upstream answered an error.*upstream-status.*the upstream answered 404/, 'failed row');
    await waitText(page, 'tr.stream-row[data-stream="carrot/conversations"]', /up to date/, 'carrot row');
    await waitText(page, 'tr.stream-row[data-stream="pos/sales"]', /up to date/, 'pos row');
  });

  await step('the jobs page shows the jobs finish, live, with the charts', async () => {
    await page.goto(`${api}/ui#/jobs`);
    // The registration's schedule read all 300 records, then the Sync button's job found
    // nothing new.
    await waitText(page, 'tr.job', /insales\/products.*api.*succeeded/, 'the api job');
    await waitText(page, 'tr.job', /insales\/products.*schedule.*succeeded/, 'the schedule job');
    await waitText(page, 'tr.job', /insales\/products.*succeeded.*300 seen · 300 ins/, 'the first read');
    const charts = await page.$$eval('.charts svg.chart', (els) => els.length);
    assert(charts === 3, `${charts} charts on the jobs page`);
    const bars = await page.$$eval('.charts svg.chart rect[fill]:not([fill="transparent"])', (els) => els.length);
    assert(bars > 0, 'the charts drew no bar');
    await waitText(page, '#main .live', /live/, 'live marker');
  });

  await step('cancel a queued job from the jobs page', async () => {
    // A full sync of a sandbox with a slow fault stays queued or running long enough.
    await http('POST', `${sandbox}/_control/faults`, { faults: [{ kind: 'slow', ms: 4000 }] });
    const job = (await http('POST', `${api}/v1/sources/insales/streams/products/sync`, { mode: 'full' })).json();
    await page.waitForSelector(`button[data-cancel="${job.id}"]`);
    await page.click(`button[data-cancel="${job.id}"]`);
    await waitText(page, `tr[data-job="${job.id}"]`, /cancelled/, 'cancelled job');
    await http('DELETE', `${sandbox}/_control/faults`);
  });

  await step('browse the records of the stream, page after page', async () => {
    await page.goto(`${api}/ui#/streams/insales/products`);
    await page.waitForSelector('table.records tr.record');
    const rows = await page.$$eval('tr.record', (els) => els.length);
    assert(rows === 25, `${rows} records on the first page`);
    const firstKey = await page.$eval('tr.record', (el) => el.dataset.key);
    await page.click('#records-next');
    await waitText(page, '#records-page', /^page 2: 25 records/, 'second page');
    const secondKey = await page.$eval('tr.record', (el) => el.dataset.key);
    assert(secondKey !== firstKey && BigInt(secondKey) > BigInt(firstKey), `page 2 starts at ${secondKey}, page 1 at ${firstKey}`);
    await page.click('tr.record .record-cell');
    await waitText(page, 'tr.record .record-cell pre', /"sku": "SKU-/, 'expanded record');
  });

  await step('set the cursor, then reset it', async () => {
    await waitText(page, '#cursor-value', /updated_since/, 'cursor');
    // What the API returns is shown as text, never as markup.
    await page.locator('#cursor-input').fill('{"updated_since": "<img src=x id=injected>", "from_id": 1}');
    await page.click('#cursor-set');
    await waitText(page, '#cursor-value', /"<img src=x id=injected>"/, 'cursor with markup');
    assert(await page.$('#injected') === null, 'markup from the API became an element');
    await page.locator('#cursor-input').fill('{"updated_since": "2017-09-04 00:00:00 +03:00", "from_id": 150000001}');
    await page.click('#cursor-set');
    await waitText(page, '#cursor .flash-area', /Cursor set/, 'set flash');
    await waitText(page, '#cursor-value', /"from_id": 150000001/, 'cursor after set');
    await waitText(page, '#jobs tr.job', /cancelled/, 'job history');
    await page.waitForSelector('#jobs svg.chart rect[fill]:not([fill="transparent"])');
    await shot(page, 'stream', { fullPage: true });
    await page.click('#cursor-reset');
    await waitText(page, '#cursor .flash-area', /Cursor reset/, 'reset flash');
    await waitText(page, '#cursor-value', /^null/, 'cursor after reset');
    const cursor = (await http('GET', `${api}/v1/sources/insales/streams/products/cursor`)).json();
    assert(cursor.cursor === null, `the API still has cursor ${JSON.stringify(cursor.cursor)}`);
  });

  await step('ids above 2^53 are shown and set back as the server wrote them (a position cursor)', async () => {
    const raw = (await http('GET', `${api}/v1/sources/carrot/streams/conversations/cursor`)).text;
    const id = /"position":\[[^,\]]+,(\d+)\]/.exec(raw)?.[1];
    assert(id && BigInt(id) > 2n ** 53n, `the carrot cursor has no big id: ${raw}`);
    await page.goto(`${api}/ui#/streams/carrot/conversations`);
    await waitText(page, '#cursor-value', new RegExp(id), 'the exact id');
    await page.click('#cursor-set'); // sets what the editor shows: the same cursor
    await waitText(page, '#cursor .flash-area', /Cursor set/, 'set flash');
    const after = (await http('GET', `${api}/v1/sources/carrot/streams/conversations/cursor`)).text;
    assert(after.includes(`,${id}]`), `the cursor came back as ${after}`);
  });

  await step('an invalid spec shows its problem at its field', async () => {
    await page.goto(`${api}/ui#/sources/new`);
    await page.waitForSelector('#spec');
    const bad = spec.replace('"name": "insales"', '"name": "broken"').replace('"limit": 250', '"limit": 99999');
    const line = bad.split('\n').findIndex((l) => l.includes('99999'));
    await page.locator('#spec').fill(bad);
    await page.click('#spec-submit');
    await waitText(page, '#spec-callout', /422 invalid-spec Invalid request body.*out of range.*at \/streams\/0\/pagination\/limit/, 'callout');
    const marked = await text(page, '.gutter .err');
    assert(Number(marked) === line + 1, `line ${marked} is marked, the limit is on line ${line + 1}`);
    const selected = await page.$eval('#spec', (el) => el.value.slice(el.selectionStart, el.selectionEnd));
    assert(/^"limit": 99999/.test(selected), `the selection is ${JSON.stringify(selected)}`);
    const inView = await page.$eval('#spec-callout', (el) => {
      const box = el.getBoundingClientRect();
      const area = el.parentElement.getBoundingClientRect();
      return box.top >= area.top && box.bottom <= area.bottom + 200;
    });
    assert(inView, 'the callout is outside the editor');
    await waitText(page, '#spec-result .problem', /422.*invalid-spec.*Invalid request body.*out of range/, 'problem box');
    const listed = (await http('GET', `${api}/v1/sources`)).json().results.map((s) => s.name);
    assert(!listed.includes('broken'), 'the invalid source was registered');
    await shot(page, 'editor-error');

    // A missing field: the problem sits on the nearest enclosing value.
    await page.locator('#spec').fill(spec.replace('"name": "insales"', '"name": "broken"').replace('"records": {"path": "", "key": "/id"', '"records": {"path": ""'));
    await page.click('#spec-submit');
    await waitText(page, '#spec-callout', /422.*key/, 'missing-field callout');

    // Not JSON at all: the line and column of the syntax error.
    await page.locator('#spec').fill('{\n  "name": "broken",\n  "base_url" "http://127.0.0.1:1"\n}');
    await page.click('#spec-submit');
    await waitText(page, '#spec-callout', /400 malformed-json/, 'syntax callout');
    assert((await text(page, '.gutter .err')) === '3', 'the syntax error is not marked on line 3');
  });

  await step('edit the source in the spec editor: a schedule change is saved', async () => {
    await page.goto(`${api}/ui#/sources/insales/edit`);
    await page.waitForFunction(() => document.querySelector('#spec').value.includes('"every_seconds": 60'));
    const current = await page.$eval('#spec', (el) => el.value);
    await page.locator('#spec').fill(current.replace('"every_seconds": 60', '"every_seconds": 120'));
    await page.click('#spec-submit');
    await waitText(page, '#spec-result', /Saved insales/, 'save');
    const saved = (await http('GET', `${api}/v1/sources/insales`)).json();
    assert(saved.streams[0].schedule.every_seconds === 120, 'the schedule was not saved');
  });

  await step('the feed page shows a live change after /_control/keyset/update', async () => {
    await page.goto(`${api}/ui#/feed`);
    await waitText(page, '#feed-status', /^live$/, 'feed connection');
    const update = await http('POST', `${sandbox}/_control/keyset/update`, { count: 3 });
    assert(update.status === 200, `sandbox update: ${update.status}`);
    await http('POST', `${api}/v1/sources/insales/streams/products/sync`, {});
    await waitText(page, 'tr.change[data-stream="insales/products"]', /insales\/products.*upsert/, 'a live change');
    await page.waitForFunction(() => document.querySelectorAll('tr.change').length >= 3);
    await waitText(page, '.feed-top .stat .value', /^[3-9]|\d\d/, 'change counter');
    await shot(page, 'feed');
  });

  await step('the consumers page shows each consumer with its position and lag', async () => {
    // One consumer from the beginning (behind by the whole feed), one at the head.
    const first = await http('GET', `${api}/v1/changes?consumer=console-behind&limit=1`);
    assert(first.status === 200, `feed read: ${first.status}`);
    let until = null;
    for (let i = 0; i < 100; i++) {
      const page = (await http('GET', `${api}/v1/changes?limit=1000${until ? `&since=${until}` : ''}`)).json();
      until = page.until;
      if (!page.results.length) break;
    }
    await http('GET', `${api}/v1/changes?consumer=console-head&since=${until}`);
    const listed = await eventually('both consumers recorded', async () => {
      const reply = (await http('GET', `${api}/v1/consumers`)).json();
      return reply.results.length >= 2 ? reply.results : null;
    });
    const behind = listed.find((c) => c.name === 'console-behind');
    const head = listed.find((c) => c.name === 'console-head');
    assert(behind.lag.changes > 0 && behind.position.since === null, `console-behind: ${JSON.stringify(behind)}`);
    assert(head.lag.changes === 0 && head.position.since === until, `console-head: ${JSON.stringify(head)}`);
    await page.goto(`${api}/ui#/consumers`);
    const shown = behind.lag.changes.toLocaleString('en-US') + (behind.lag.exact ? '' : '+');
    await waitText(page, 'tr.consumer[data-consumer="console-behind"]', new RegExp(`console-behind.*every stream.*the beginning.*${shown}`), 'the consumer behind, with its lag');
    await waitText(page, 'tr.consumer[data-consumer="console-head"]', new RegExp(`console-head.*every stream.*${until.slice(0, 12)}.*\\b0\\b`), 'the consumer at the head, lag 0');
    assert(await page.$$eval('svg.chart rect', (els) => els.length) === listed.length, 'a lag bar per consumer');
    log(`   console-behind is ${shown} changes behind, console-head 0`);
    await shot(page, 'consumers');
  });

  await step('the sources and jobs pages after all that', async () => {
    await page.goto(`${api}/ui#/sources`);
    await waitText(page, 'tr.stream-row[data-stream="legacy/customers"]', /failed/, 'sources page');
    await shot(page, 'sources');
    await page.goto(`${api}/ui#/jobs`);
    await waitText(page, 'tr.job', /cancelled/, 'jobs page');
    await page.waitForFunction(() => document.querySelectorAll('.charts svg.chart .bar rect[fill]:not([fill="transparent"])').length >= 3);
    await shot(page, 'jobs');
  });

  await step('on a server with tokens a 401 shows the token field, and the token opens the console', async () => {
    const locked = await start('serve-tokens', ['serve', '--bind', '127.0.0.1:0', '--workers', '0', '--database-url', `sqlite://${tmp}/tokens.db`],
      'serving', { TIDEMARK_API_TOKENS: `admin:${ADMIN}` });
    const p = await newPage();
    await p.goto(`${locked}/ui`);
    await p.waitForSelector('#token-panel:not([hidden])');
    await waitText(p, '#token-reason', /needs an API token/, 'token reason');
    await shot(p, 'token');
    await p.type('#token-input', ADMIN);
    await p.click('#token-panel button[type=submit]');
    await waitText(p, '.page-sources .empty-state', /No source is registered yet/, 'sources with the token');
    assert(await p.$eval('#token-panel', (el) => el.hidden), 'the token field stayed open');
    const stored = await p.evaluate(() => sessionStorage.getItem('tidemark.token'));
    assert(stored === ADMIN, 'the token is not in sessionStorage');
    // The feed follows through fetch (EventSource cannot send the token).
    await p.goto(`${locked}/ui#/feed`);
    await waitText(p, '#feed-status', /^live$/, 'feed with the token');
    await p.close();
  });

  assert(blocked.length === 0, `requests left the machine: ${blocked.join(', ')}`);
  assert(pageErrors.length === 0, pageErrors.join('\n'));
}

let failed = 0;
try {
  await main();
} catch (e) {
  failed = 1;
  console.log(`console-test: FAILED after ${passed} steps: ${e.message}`);
  for (const name of ['serve', 'sandbox', 'serve-tokens']) {
    const file = path.join(tmp, `${name}.log`);
    if (fs.existsSync(file)) console.log(`--- ${name} log (last lines)\n${fs.readFileSync(file, 'utf8').trim().split('\n').slice(-12).join('\n')}`);
  }
}
clearTimeout(deadline);
await browser?.close().catch(() => {});
cleanup();
log('console-test: done');
console.log(`console-test: ${passed} passed, ${failed} failed`);
process.exitCode = failed;
