// Small charts drawn as inline SVG: stacked bars with a y scale, tooltips (<title>) and
// an HTML legend. No library.

import { h, s, count, seconds, duration } from './dom.js';

export const COLORS = {
  succeeded: '#2a9d8f', failed: '#d62839', cancelled: '#9aa5b1', running: '#f4a261', queued: '#c9d1d9',
  inserted: '#2a9d8f', updated: '#457b9d', deleted: '#d62839', unchanged: '#c9d1d9',
  upsert: '#457b9d', delete: '#d62839',
};

const H = 150;
const M = { left: 48, right: 8, top: 10, bottom: 20 };

/** A round number at or above v: the top of the y scale. */
function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function short(v) {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(2)}`;
}

/**
 * Stacked bars. bars: [{values: {key: n}, title, label}], keys: the stack order (bottom
 * first). xLabels: [[index, text]]. yFormat formats the scale's numbers.
 */
export function bars({ bars, keys, xLabels = [], yFormat = short, empty = 'nothing yet', label, width: W = 420 }) {
  const inner = { w: W - M.left - M.right, h: H - M.top - M.bottom };
  const totals = bars.map((b) => keys.reduce((t, k) => t + (b.values[k] || 0), 0));
  const top = niceMax(Math.max(0, ...totals));
  const y = (v) => M.top + inner.h - (v / top) * inner.h;
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': label || '' });
  for (const tick of [0, top / 2, top]) {
    svg.append(
      s('line', { x1: M.left, x2: W - M.right, y1: y(tick), y2: y(tick), class: 'grid' }),
      s('text', { x: M.left - 5, y: y(tick) + 3.5, class: 'tick', 'text-anchor': 'end' }, yFormat(tick)));
  }
  const n = Math.max(bars.length, 1);
  const step = inner.w / n;
  const width = Math.max(1, Math.min(step * 0.78, 28));
  bars.forEach((bar, i) => {
    const x = M.left + i * step + (step - width) / 2;
    let base = 0;
    const group = s('g', { class: 'bar' }, s('title', {}, bar.title || ''));
    for (const key of keys) {
      const v = bar.values[key] || 0;
      if (v <= 0) continue;
      group.append(s('rect', { x, y: y(base + v), width, height: Math.max(y(base) - y(base + v), 2), fill: COLORS[key] || '#457b9d' }));
      base += v;
    }
    // A full-height transparent rect so the tooltip shows anywhere over the column.
    group.append(s('rect', { x: M.left + i * step, y: M.top, width: step, height: inner.h, fill: 'transparent' }));
    svg.append(group);
  });
  for (const [i, text] of xLabels) {
    svg.append(s('text', { x: M.left + (i + 0.5) * step, y: H - 5, class: 'tick', 'text-anchor': 'middle' }, text));
  }
  if (!totals.some((t) => t > 0)) {
    svg.append(s('text', { x: M.left + inner.w / 2, y: M.top + inner.h / 2, class: 'empty', 'text-anchor': 'middle' }, empty));
  }
  return svg;
}

export function legend(keys) {
  return h('div', { class: 'legend' }, keys.map((k) => h('span', {}, h('i', { class: 'sw', style: { background: COLORS[k] } }), k)));
}

/** A titled chart card. */
export function figure(title, chart, keys, caption) {
  return h('figure', { class: 'card chart-card' },
    h('figcaption', {}, title, caption ? h('span', { class: 'muted' }, ` ${caption}`) : null),
    chart,
    keys ? legend(keys) : null);
}

function minuteLabel(t) {
  const d = new Date(t);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/** Finished jobs per minute over the last `minutes`, by finish time. */
function perMinute(jobs, minutes, now) {
  const end = Math.floor(now / 60000) * 60000 + 60000;
  const start = end - minutes * 60000;
  const buckets = Array.from({ length: minutes }, (_, i) => ({ t: start + i * 60000, jobs: [] }));
  for (const job of jobs) {
    if (!job.finished_at) continue;
    const t = Date.parse(job.finished_at);
    if (t < start || t >= end) continue;
    buckets[Math.floor((t - start) / 60000)].jobs.push(job);
  }
  return buckets;
}

function ticks(buckets) {
  const every = Math.ceil(buckets.length / 5);
  return buckets.map((b, i) => [i, minuteLabel(b.t)]).filter(([i]) => (buckets.length - 1 - i) % every === 0);
}

const RECORD_KEYS = ['inserted', 'updated', 'deleted', 'unchanged'];
const STATUS_KEYS = ['succeeded', 'failed', 'cancelled'];

/** A stacked bar per minute of finished jobs: value(jobs, key) for each key. */
function minuteChart(jobs, { title, keys, value, format, minutes, now, yFormat }) {
  const buckets = perMinute(jobs, minutes, now);
  const chart = bars({
    label: title.toLowerCase(),
    keys,
    empty: `no job finished in the last ${minutes} min`,
    xLabels: ticks(buckets),
    yFormat,
    bars: buckets.map((b) => {
      const values = Object.fromEntries(keys.map((k) => [k, value(b.jobs, k)]));
      return { values, title: `${minuteLabel(b.t)}: ${keys.map((k) => `${format(values[k])} ${k}`).join(', ')}` };
    }),
  });
  return figure(title, chart, keys, `(last ${minutes} min)`);
}

/** Records synced per minute (by what they did to the mirror). */
export function recordsPerMinute(jobs, minutes = 30, now = Date.now()) {
  return minuteChart(jobs, {
    title: 'Records synced per minute', keys: RECORD_KEYS, minutes, now, format: count,
    value: (done, k) => done.reduce((t, j) => t + (j.stats?.[k] || 0), 0),
  });
}

/** Finished jobs per minute, by outcome. */
export function jobsPerMinute(jobs, minutes = 30, now = Date.now()) {
  return minuteChart(jobs, {
    title: 'Jobs per minute', keys: STATUS_KEYS, minutes, now, format: String,
    value: (done, k) => done.filter((j) => j.status === k).length,
    yFormat: (v) => (Number.isInteger(v) ? String(v) : ''),
  });
}

/** The durations of the last `n` finished jobs, oldest left. */
export function jobDurations(jobs, n = 40, width = 420) {
  const done = jobs.filter((j) => j.finished_at && j.started_at)
    .sort((a, b) => Date.parse(a.finished_at) - Date.parse(b.finished_at))
    .slice(-n);
  const chart = bars({
    label: 'job durations',
    width,
    keys: STATUS_KEYS,
    empty: 'no finished job yet',
    yFormat: (v) => seconds(v),
    xLabels: done.length ? [[0, minuteLabel(Date.parse(done[0].finished_at))], [done.length - 1, minuteLabel(Date.parse(done[done.length - 1].finished_at))]] : [],
    bars: done.map((j) => {
      const d = duration(j);
      return {
        values: { [j.status]: d },
        title: `${j.source}/${j.stream} ${j.mode}, ${j.status} in ${seconds(d)} (${count(j.stats?.records_seen)} records)`,
      };
    }),
  });
  return figure('Job durations', chart, STATUS_KEYS, `(last ${done.length} finished)`);
}

/** Events per second over the last `span` seconds (the feed page). */
export function perSecond(times, span = 60, now = Date.now(), keys = ['upsert', 'delete'], width = 760) {
  const end = Math.floor(now / 1000) * 1000 + 1000;
  const start = end - span * 1000;
  const buckets = Array.from({ length: span }, () => Object.fromEntries(keys.map((k) => [k, 0])));
  for (const [t, key] of times) {
    if (t >= start && t < end) buckets[Math.floor((t - start) / 1000)][key] += 1;
  }
  return bars({
    label: 'changes per second',
    width,
    keys,
    empty: 'waiting for changes…',
    xLabels: [[0, `-${span}s`], [span - 1, 'now']],
    yFormat: (v) => (Number.isInteger(v) ? String(v) : ''),
    bars: buckets.map((values, i) => ({ values, title: `${span - 1 - i} s ago: ${keys.map((k) => `${values[k]} ${k}`).join(', ')}` })),
  });
}
