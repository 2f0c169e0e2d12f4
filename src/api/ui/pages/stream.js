// One stream: its state, its cursor (view, set, reset), its jobs and its mirror.
import { h, put, href, seconds, schedule, time, action, note, count } from '../dom.js';
import { api, get, query, streamPath, problemBox, showError, jsonText, jsonLine, parseLossless } from '../api.js';
import { lastJob, jobsTable } from './jobs.js';
import { state } from './sources.js';
import { jobDurations } from '../charts.js';

const PAGE = 25;

export async function render(root, { source, stream }, ctx) {
  const title = `${source}/${stream}`;
  const summary = h('div', { class: 'cards' });
  const cursorView = h('div', {});
  const cursorFlash = h('div', { class: 'flash-area' });
  const cursorInput = h('textarea', { class: 'code', rows: 4, spellcheck: 'false', 'aria-label': 'new cursor', id: 'cursor-input' });
  const jobsBox = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const durations = h('div', { class: 'charts one' });
  const records = h('div', {});
  const syncFlash = h('div', { class: 'flash-area' });
  const stateBadge = h('span', {});

  const sync = (mode) => action(mode, async () => {
    try {
      const job = await api('POST', streamPath(source, stream, 'sync'), { mode });
      note(syncFlash, `Job ${job.id.slice(0, 8)} (${job.mode}): ${job.status}.`);
    } catch (e) {
      put(syncFlash, problemBox(e));
    }
    refreshJobs();
  }, { class: mode === 'incremental' ? 'small' : 'small secondary', 'data-sync': mode });

  put(root,
    h('nav', { class: 'crumbs' }, h('a', { href: '#/sources' }, 'Sources'), ' / ', source, ' / ', stream),
    h('div', { class: 'page-head' }, h('h1', {}, title), stateBadge,
      h('div', { class: 'filters' }, h('span', { class: 'muted' }, 'Sync: '), sync('incremental'), sync('full'), sync('reconcile'),
        h('a', { class: 'button small secondary', href: href('sources', source, 'edit') }, 'Edit source'))),
    syncFlash,
    summary,
    h('section', { class: 'card', id: 'cursor' },
      h('h2', {}, 'Cursor'),
      h('p', { class: 'muted' }, 'Where the next incremental run starts. Set it to start elsewhere; reset it to start from the beginning.'),
      cursorView,
      h('div', { class: 'cursor-edit' },
        cursorInput,
        h('div', { class: 'buttons' },
          action('Set cursor', async () => {
            let cursor;
            try {
              cursor = cursorInput.value.trim() === '' ? null : parseLossless(cursorInput.value);
            } catch (e) {
              put(cursorFlash, problemBox({ status: 0, type: 'not-json', title: 'Not JSON', detail: e.message }));
              return;
            }
            try {
              await api('PUT', streamPath(source, stream, 'cursor'), `{"cursor": ${jsonText(cursor, 0)}}`);
              note(cursorFlash, 'Cursor set: the next incremental run starts there.');
            } catch (e) {
              put(cursorFlash, problemBox(e));
            }
            refreshCursor();
          }, { id: 'cursor-set' }),
          action('Reset cursor', async () => {
            if (!confirm(`Reset the cursor of ${title}? Its next incremental run reads from the beginning.`)) return;
            try {
              await api('DELETE', streamPath(source, stream, 'cursor'));
              note(cursorFlash, 'Cursor reset: the next incremental run starts from the beginning.');
            } catch (e) {
              put(cursorFlash, problemBox(e));
            }
            refreshCursor();
          }, { class: 'danger', id: 'cursor-reset' }))),
      cursorFlash),
    h('section', { class: 'card', id: 'jobs' }, h('h2', {}, 'Jobs'), durations, jobsBox),
    h('section', { class: 'card', id: 'records' }, h('h2', {}, 'Records'), records));

  const refreshSummary = async () => {
    try {
      const view = await get(streamPath(source, stream));
      put(stateBadge, state(view));
      put(summary,
        card('Lag', view.lag_seconds === null ? '–' : seconds(view.lag_seconds), 'since the last successful job'),
        card('Schedule', schedule(view.schedule)),
        card('Strategy', view.pagination?.type ?? '–', `${view.request?.method ?? 'GET'} ${view.request?.path ?? ''}`),
        h('div', { class: 'card stat wide' }, h('div', { class: 'label' }, 'Last job'), lastJob(view.last_job)));
    } catch (e) {
      showError(summary, e);
    }
  };

  const refreshCursor = async () => {
    try {
      const c = await get(streamPath(source, stream, 'cursor'), { lossless: true });
      put(cursorView,
        h('pre', { class: 'code', id: 'cursor-value' }, c.cursor === null ? 'null (the next run starts from the beginning)' : jsonText(c.cursor)),
        h('p', { class: 'muted' }, c.updated_at ? ['written ', time(c.updated_at), c.job ? ` by job ${c.job.slice(0, 8)}` : ' through the API'] : 'not written since the stream was registered or its cursor reset'));
      if (document.activeElement !== cursorInput) cursorInput.value = c.cursor === null ? '' : jsonText(c.cursor);
    } catch (e) {
      showError(cursorView, e);
    }
  };

  const refreshJobs = async () => {
    try {
      const page = await get('/v1/jobs' + query({ source, stream, limit: 100 }));
      put(jobsBox, jobsTable(page.results.slice(0, 15), { showStream: false, refresh: refreshJobs }));
      put(durations, jobDurations(page.results, 60, 1100));
    } catch (e) {
      showError(jobsBox, e);
    }
  };

  // The records browser: pages in key order, `next` for the following one.
  const trail = [''];
  const showRecords = async () => {
    const after = trail[trail.length - 1];
    try {
      const page = await get(streamPath(source, stream, 'records') + query({ limit: PAGE, after }), { lossless: true });
      const first = trail.length === 1;
      put(records,
        h('div', { class: 'pager' },
          h('span', { class: 'muted', id: 'records-page' }, `page ${trail.length}${page.results.length ? `: ${count(page.results.length)} records from key ${page.results[0].key}` : ''}`),
          action('◂ Previous', async () => { trail.pop(); await showRecords(); }, { class: 'small secondary', disabled: first }),
          action('Next ▸', async () => { trail.push(page.next); await showRecords(); }, { class: 'small secondary', disabled: !page.next, id: 'records-next' })),
        page.results.length
          ? h('table', { class: 'records' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Key'), h('th', { class: 'num' }, 'Rev'), h('th', {}, 'Synced'), h('th', {}, 'Record'))),
            h('tbody', {}, page.results.map((r) => {
              const full = h('pre', { class: 'code', hidden: true }, jsonText(r.record));
              const line = h('code', { class: 'preview' }, jsonLine(r.record));
              return h('tr', { class: 'record', dataset: { key: String(r.key) } },
                h('td', {}, h('code', {}, String(r.key))),
                h('td', { class: 'num' }, String(r.rev)),
                h('td', {}, time(r.synced_at)),
                h('td', { class: 'record-cell', on: { click: () => { full.hidden = !full.hidden; line.hidden = !full.hidden; } }, title: 'click to expand' }, line, full));
            })))
          : h('p', { class: 'muted empty-state' }, first ? 'The mirror of this stream is empty: sync it.' : 'No more records.'));
    } catch (e) {
      showError(records, e);
    }
  };

  await Promise.all([refreshCursor(), showRecords()]);
  ctx.every(3000, refreshSummary);
  ctx.every(3000, refreshJobs);
}

function card(label, value, hint) {
  return h('div', { class: 'card stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), hint ? h('div', { class: 'muted' }, hint) : null);
}
