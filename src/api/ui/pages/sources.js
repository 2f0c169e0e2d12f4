// Every source with its streams: state, lag, schedule and last job; the job charts above.
import { h, put, href, badge, seconds, schedule, action, note, cut } from '../dom.js';
import { api, get, all, streamPath, problemBox, showError } from '../api.js';
import { lastJob, jobCharts } from './jobs.js';

/** Whether the mirror is more than two schedule periods behind. */
function late(view) {
  const every = view.schedule?.every_seconds;
  return Boolean(every && view.lag_seconds > 2 * every);
}

/** A stream's state: what its newest job is doing, else how its last one ended. */
export function state(view, finished) {
  const job = view.last_job;
  if (!job) return badge('never synced', 'cancelled');
  if (job.status === 'queued') return badge('queued');
  if (job.status === 'running') return badge('syncing', 'running');
  const last = finished || job;
  if (last.status === 'failed') return badge('failed', 'failed', last.error?.title);
  if (last.status === 'cancelled') return badge('cancelled');
  if (late(view)) return badge('behind', 'behind', 'more than two schedule periods since the last successful job');
  return badge('up to date', 'succeeded');
}

/** Lag in words, marked when the mirror is more than two schedule periods behind. */
function lag(view) {
  if (view.lag_seconds === null || view.lag_seconds === undefined) return h('span', { class: 'muted' }, '–');
  return h('span', { class: late(view) ? 'late' : '', title: 'seconds since the last successful job finished' }, seconds(view.lag_seconds));
}

export async function render(root, _params, ctx) {
  const flash = h('div', { class: 'flash-area' });
  const charts = h('div', { class: 'charts' });
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  put(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Sources'),
      h('a', { class: 'button', href: '#/sources/new' }, 'Register a source')),
    flash, charts, body);

  let active = false; // some stream has a queued or running job: look again sooner
  let last = 0;
  const refresh = async () => {
    last = Date.now();
    let sources;
    let jobs;
    try {
      [sources, jobs] = await Promise.all([all('/v1/sources'), all('/v1/jobs', {}, 1000)]);
    } catch (e) {
      showError(body, e);
      return;
    }
    put(charts, jobCharts(jobs));
    if (!sources.length) {
      put(body, h('div', { class: 'card empty-state' },
        h('p', {}, 'No source is registered yet.'),
        h('p', {}, h('a', { href: '#/sources/new' }, 'Register one'), ' in the spec editor, or ',
          h('code', {}, 'POST /v1/sources'), ' (see ', h('a', { href: '/docs/' }, 'the API docs'), ').')));
      return;
    }
    // The newest finished job of each stream, for when its newest job is still running.
    const finished = new Map();
    for (const job of jobs) {
      const key = `${job.source}/${job.stream}`;
      if (job.finished_at && !finished.has(key)) finished.set(key, job);
    }
    const views = await Promise.all(sources.map((src) => Promise.all(src.streams.map((st) =>
      get(streamPath(src.name, st.name)).catch((error) => ({ ...st, source: src.name, error }))))));
    active = views.flat().some((v) => v.last_job && !v.last_job.finished_at);
    const rows = [];
    sources.forEach((src, i) => {
      rows.push(h('tr', { class: 'source-row', dataset: { source: src.name } },
        h('th', { colspan: 5 },
          h('span', { class: 'source-name' }, src.name), ' ',
          h('span', { class: 'muted' }, cut(src.base_url, 60)), ' ',
          h('span', { class: 'muted' }, `· ${src.streams.length} stream${src.streams.length === 1 ? '' : 's'}`)),
        h('th', { colspan: 2, class: 'actions' },
          action('Sync all', async () => {
            try {
              const reply = await api('POST', `/v1/sources/${encodeURIComponent(src.name)}/sync`, { mode: 'incremental' });
              note(flash, `Queued ${reply.jobs.length} job${reply.jobs.length === 1 ? '' : 's'} for ${src.name}.`);
            } catch (e) {
              put(flash, problemBox(e));
            }
            refresh();
          }, { class: 'small' }), ' ',
          h('a', { class: 'button small secondary', href: href('sources', src.name, 'edit') }, 'Edit'), ' ',
          action('Remove', async () => {
            if (!confirm(`Remove ${src.name} with its streams, cursors, jobs and mirrored records?`)) return;
            try {
              await api('DELETE', `/v1/sources/${encodeURIComponent(src.name)}`);
              note(flash, `Removed ${src.name}.`);
            } catch (e) {
              put(flash, problemBox(e));
            }
            refresh();
          }, { class: 'small danger' }))));
      for (const view of views[i]) {
        const newest = view.last_job;
        const shown = newest && !newest.finished_at ? finished.get(`${src.name}/${view.name}`) || newest : newest;
        rows.push(h('tr', { class: 'stream-row', dataset: { stream: `${src.name}/${view.name}` } },
          h('td', {}, h('a', { href: href('streams', src.name, view.name) }, view.name)),
          h('td', {}, view.pagination?.type ?? '–'),
          h('td', {}, view.error ? problemBox(view.error) : state(view, shown)),
          h('td', { class: 'num' }, lag(view)),
          h('td', {}, schedule(view.schedule)),
          h('td', {}, lastJob(shown)),
          h('td', { class: 'actions' }, action('Sync', async () => {
            try {
              const job = await api('POST', streamPath(src.name, view.name, 'sync'), { mode: 'incremental' });
              note(flash, `Job ${job.id.slice(0, 8)} for ${src.name}/${view.name}: ${job.status}.`);
            } catch (e) {
              put(flash, problemBox(e));
            }
            refresh();
          }, { class: 'small' }))));
      }
    });
    put(body, h('table', { class: 'sources' },
      h('thead', {}, h('tr', {}, ['Stream', 'Strategy', 'State', 'Lag', 'Schedule', 'Last job', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows)));
  };
  await ctx.every(1000, async () => {
    if (active ? Date.now() - last >= 1500 : Date.now() - last >= 5000) await refresh();
  });
}
