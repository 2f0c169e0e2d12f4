// Named feed consumers (design §5): who reads the feed, where each one is and how far
// behind (GET /v1/consumers).
import { h, s, put, ago, seconds, count, cut, action } from '../dom.js';
import { api, get, problemBox, showError } from '../api.js';

/** Changes behind: exact, or "10,000+" where the server stopped counting. */
function behind(lag) {
  return lag.exact ? count(lag.changes) : `${count(lag.changes)}+`;
}

/** A horizontal bar per consumer: its lag in changes. */
function lagChart(consumers) {
  const width = 1160;
  const row = 26;
  const left = 160;
  const max = Math.max(1, ...consumers.map((c) => c.lag.changes));
  const svg = s('svg', { viewBox: `0 0 ${width} ${row * consumers.length + 8}`, class: 'chart', role: 'img', 'aria-label': 'lag in changes per consumer' });
  consumers.forEach((c, i) => {
    const y = 4 + i * row;
    const w = (c.lag.changes / max) * (width - left - 60);
    svg.append(
      s('text', { x: left - 8, y: y + 17, class: 'name', 'text-anchor': 'end' }, c.name),
      s('g', { class: 'bar' }, s('title', {}, `${c.name}: ${behind(c.lag)} changes behind`),
        s('rect', { x: left, y: y + 4, width: Math.max(w, 2), height: row - 8, fill: c.lag.changes ? '#f4a261' : '#2a9d8f' })),
      s('text', { x: left + Math.max(w, 2) + 6, y: y + 17, class: 'name' }, behind(c.lag)));
  });
  return svg;
}

/** What a consumer reads: its stream filter, or the whole feed. */
function scope(position) {
  return position.stream ? position.stream : h('span', { class: 'muted' }, 'every stream');
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

  const refresh = async () => {
    let reply;
    try {
      reply = await get('/v1/consumers');
    } catch (e) {
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
          h('td', {}, h('strong', {}, c.name)),
          h('td', {}, scope(c.position)),
          h('td', {}, c.position.since === null ? h('span', { class: 'muted' }, 'the beginning') : h('code', {}, cut(c.position.since, 24))),
          h('td', {}, h('span', { title: c.last_read_at }, ago(c.last_read_at))),
          h('td', { class: 'num' }, behind(c.lag)),
          h('td', { class: 'num' }, seconds(c.lag.seconds)),
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
