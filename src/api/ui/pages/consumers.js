// Named feed consumers (design §5): who reads the feed, where each one is and how far
// behind. Servers without GET /v1/consumers (404) say so instead.
import { h, s, put, ago, seconds, count, cut, action } from '../dom.js';
import { api, get, ApiProblem, problemBox, showError } from '../api.js';

/** A horizontal bar per consumer: its lag in changes. */
function lagChart(consumers) {
  const width = 1160;
  const row = 26;
  const left = 160;
  const max = Math.max(1, ...consumers.map((c) => c.lag_changes || 0));
  const svg = s('svg', { viewBox: `0 0 ${width} ${row * consumers.length + 8}`, class: 'chart', role: 'img', 'aria-label': 'lag in changes per consumer' });
  consumers.forEach((c, i) => {
    const y = 4 + i * row;
    const w = ((c.lag_changes || 0) / max) * (width - left - 60);
    svg.append(
      s('text', { x: left - 8, y: y + 17, class: 'name', 'text-anchor': 'end' }, String(c.name)),
      s('g', { class: 'bar' }, s('title', {}, `${c.name}: ${count(c.lag_changes)} changes behind`),
        s('rect', { x: left, y: y + 4, width: Math.max(w, 2), height: row - 8, fill: c.lag_changes ? '#f4a261' : '#2a9d8f' })),
      s('text', { x: left + Math.max(w, 2) + 6, y: y + 17, class: 'name' }, count(c.lag_changes)));
  });
  return svg;
}

/** What a consumer reads: its stream filter, if the server reports one. */
function scope(c) {
  const value = c.stream ?? c.streams ?? c.scope ?? null;
  if (value === null || value === '' || (Array.isArray(value) && !value.length)) return h('span', { class: 'muted' }, 'every stream');
  return typeof value === 'string' ? value : Array.isArray(value) ? value.join(', ') : JSON.stringify(value);
}

export async function render(root, _params, ctx) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const flash = h('div', { class: 'flash-area' });
  const live = h('span', { class: 'live' }, 'live');
  put(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Consumers'), live),
    h('p', { class: 'muted' }, 'Downstream services that read the feed under a name (',
      h('code', {}, 'consumer=<name>'), ' on ', h('code', {}, '/v1/changes'), ' or ', h('code', {}, '/v1/changes/stream'),
      '): where each one is and how far behind the head of its scope.'),
    flash, body);

  let unavailable = false;
  const refresh = async () => {
    if (unavailable) return;
    let reply;
    try {
      reply = await get('/v1/consumers');
    } catch (e) {
      if (e instanceof ApiProblem && e.problem.status === 404) {
        unavailable = true;
        live.hidden = true;
        put(body, h('div', { class: 'card empty-state', id: 'consumers-unavailable' },
          h('h2', {}, 'Not available on this server'),
          h('p', {}, 'This tidemark has no named consumers yet (', h('code', {}, 'GET /v1/consumers'),
            ' answered 404). Consumers still read the feed as usual; only their positions and lag are not recorded.'),
          h('p', { class: 'muted' }, 'A later tidemark records them: this page then lists each one with its lag.')));
        return;
      }
      live.className = 'live off';
      showError(body, e);
      return;
    }
    live.className = 'live on';
    const consumers = reply.results || [];
    if (!consumers.length) {
      put(body, h('div', { class: 'card empty-state' },
        h('p', {}, 'No named consumer has read the feed yet.'),
        h('p', { class: 'muted' }, 'A consumer names itself with ', h('code', {}, '?consumer=<name>'), ' when it reads the feed.')));
      return;
    }
    put(body,
      h('div', { class: 'charts one' }, h('figure', { class: 'card chart-card' }, h('figcaption', {}, 'Lag in changes'), lagChart(consumers))),
      h('table', { class: 'consumers' },
        h('thead', {}, h('tr', {}, ['Consumer', 'Scope', 'Position', 'Last read', 'Lag (changes)', 'Lag (time)', ''].map((t, i) => h('th', { class: i === 4 || i === 5 ? 'num' : '' }, t)))),
        h('tbody', {}, consumers.map((c) => h('tr', { class: 'consumer', dataset: { consumer: String(c.name) } },
          h('td', {}, h('strong', {}, String(c.name))),
          h('td', {}, scope(c)),
          h('td', {}, h('code', {}, cut(c.position ?? c.until ?? '–', 24))),
          h('td', {}, c.last_read_at ? h('span', { title: c.last_read_at }, ago(c.last_read_at)) : '–'),
          h('td', { class: 'num' }, count(c.lag_changes)),
          h('td', { class: 'num' }, c.lag_seconds === null || c.lag_seconds === undefined ? '–' : seconds(c.lag_seconds)),
          h('td', {}, action('Forget', async () => {
            if (!confirm(`Forget the consumer ${c.name}? It is listed again when it next reads the feed.`)) return;
            try {
              await api('DELETE', `/v1/consumers/${encodeURIComponent(c.name)}`);
            } catch (e) {
              put(flash, problemBox(e));
            }
            refresh();
          }, { class: 'small danger' })))))));
  };
  await ctx.every(5000, refresh);
}
