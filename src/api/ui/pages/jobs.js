// Jobs, newest first, refreshed every two seconds, with cancel; the charts of what they
// did. Also the job pieces the other pages show.
import { h, put, href, badge, ago, time, seconds, count, duration, action, prose } from '../dom.js';
import { api, get, all, query, problemBox, showError } from '../api.js';
import { recordsPerMinute, jobsPerMinute, jobDurations } from '../charts.js';

const ACTIVE = new Set(['queued', 'running']);

/** A job's counters, one line. */
export function stats(job) {
  const st = job.stats || {};
  return h('span', { class: 'stats', title: `requests ${st.requests}, pages ${st.pages}` },
    `${count(st.records_seen)} seen · ${count(st.inserted)} ins · ${count(st.updated)} upd · ${count(st.deleted)} del`);
}

/** A failed job's problem: title and detail (and its type). */
export function jobError(job) {
  if (!job.error) return null;
  const e = job.error;
  return h('div', { class: 'job-error' },
    h('strong', {}, String(e.title ?? 'failed')), ' ', h('code', {}, String(e.type ?? '')),
    e.detail ? h('div', { class: 'detail' }, ...prose(e.detail)) : null);
}

/** A job that met a stale cursor and read again from the beginning: status and reason. */
export function jobResync(job) {
  if (!job.resynced) return null;
  const r = job.resynced;
  return h('div', { class: 'job-resync', title: `at ${r.at}` },
    h('strong', {}, `resynced (${r.status})`), ' ', h('span', { class: 'detail' }, ...prose(r.reason)));
}

/** The last job of a stream, as the sources and stream pages show it. */
export function lastJob(job) {
  if (!job) return h('span', { class: 'muted' }, 'never run');
  const when = job.finished_at ? `finished ${ago(job.finished_at)}` : job.started_at ? `started ${ago(job.started_at)}` : `queued ${ago(job.created_at)}`;
  return h('div', { class: 'last-job' },
    h('div', {}, badge(job.status), ' ', h('span', { class: 'muted' }, `${job.mode}, by ${job.trigger}, ${when}`),
      duration(job) !== null ? h('span', { class: 'muted' }, ` in ${seconds(duration(job))}`) : null),
    h('div', {}, stats(job)),
    jobResync(job),
    jobError(job));
}

export function cancelButton(job, after) {
  if (!ACTIVE.has(job.status)) return null;
  return action('Cancel', async (button) => {
    try {
      await api('POST', `/v1/jobs/${encodeURIComponent(job.id)}/cancel`);
      button.replaceWith(h('span', { class: 'muted' }, 'cancelling…'));
    } catch (e) {
      button.after(problemBox(e));
    }
    if (after) after();
  }, { class: 'small danger', 'data-cancel': job.id });
}

/** A table of jobs; `stream` column links to the stream page. */
export function jobsTable(jobs, { showStream = true, refresh } = {}) {
  if (!jobs.length) return h('p', { class: 'muted empty-state' }, 'No job yet.');
  return h('table', { class: 'jobs' },
    h('thead', {}, h('tr', {},
      h('th', {}, 'Created'), showStream ? h('th', {}, 'Stream') : null, h('th', {}, 'Mode'), h('th', {}, 'Trigger'),
      h('th', {}, 'Status'), h('th', { class: 'num' }, 'Duration'), h('th', {}, 'Records'), h('th', {}, ''))),
    h('tbody', {}, jobs.map((job) => h('tr', { class: `job s-${job.status}`, dataset: { job: job.id } },
      h('td', {}, time(job.created_at)),
      showStream ? h('td', {}, h('a', { href: href('streams', job.source, job.stream) }, `${job.source}/${job.stream}`)) : null,
      h('td', {}, job.mode),
      h('td', {}, job.trigger),
      h('td', {}, badge(job.status), job.attempts > 1 ? h('span', { class: 'muted' }, ` ×${job.attempts}`) : null),
      h('td', { class: 'num' }, duration(job) === null ? '–' : seconds(duration(job))),
      h('td', {}, stats(job), jobResync(job), jobError(job)),
      h('td', {}, cancelButton(job, refresh))))));
}

/** The three charts of the jobs page and the sources page. */
export function jobCharts(jobs) {
  return [recordsPerMinute(jobs), jobsPerMinute(jobs), jobDurations(jobs)];
}

export async function render(root, _params, ctx) {
  const filters = { source: '', status: '' };
  const sourceSelect = h('select', { 'aria-label': 'source' }, h('option', { value: '' }, 'every source'));
  const statusSelect = h('select', { 'aria-label': 'status' },
    ['', 'queued', 'running', 'succeeded', 'failed', 'cancelled'].map((s) => h('option', { value: s }, s || 'any status')));
  const live = h('span', { class: 'live' }, 'live');
  const charts = h('div', { class: 'charts' });
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const more = h('div', { class: 'more' });
  let shown = 50;

  put(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Jobs'), live,
      h('div', { class: 'filters' }, sourceSelect, statusSelect)),
    charts, list, more);

  const refresh = async () => {
    try {
      const page = await get('/v1/jobs' + query({ ...filters, limit: Math.min(shown, 1000) }));
      put(list, jobsTable(page.results, { refresh }));
      put(more, page.next && shown < 1000
        ? action('Older jobs', async () => { shown += 50; await refresh(); }, { class: 'secondary' })
        : null);
      live.className = 'live on';
      live.title = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    } catch (e) {
      live.className = 'live off';
      showError(list, e);
    }
  };
  const refreshCharts = async () => {
    const jobs = await all('/v1/jobs', { source: filters.source }, 1000);
    put(charts, jobCharts(jobs));
  };
  for (const [select, key] of [[sourceSelect, 'source'], [statusSelect, 'status']]) {
    select.addEventListener('change', () => {
      filters[key] = select.value;
      shown = 50;
      refresh();
      if (key === 'source') refreshCharts();
    });
  }
  get('/v1/sources?limit=1000').then((sources) => {
    for (const src of sources.results) sourceSelect.append(h('option', { value: src.name }, src.name));
  }).catch(() => {});
  ctx.every(2000, refresh);
  ctx.every(10000, refreshCharts);
}
