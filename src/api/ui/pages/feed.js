// The change feed, live: Server-Sent Events from GET /v1/changes/stream, starting from
// "now" (GET /v1/changes/head). The events are named `change`, so they arrive through
// addEventListener('change', ...), never onmessage. EventSource cannot send an
// Authorization header: with a token the page reads the same stream through fetch.
import { h, put, time, count, badge } from '../dom.js';
import { get, all, query, authHeaders, token, parseLossless, jsonText, jsonLine, showError, problemBox } from '../api.js';
import { perSecond } from '../charts.js';

const KEEP = 200; // changes listed
const SPAN = 60; // seconds of the rate chart

/**
 * Follows the stream at `url`: onChange(change, id) for each `change` event, onProblem
 * for an `event: problem`, onState('open' | 'reconnecting' | 'closed'). Returns a stop
 * function.
 */
function follow(url, { onChange, onProblem, onState }) {
  if (!token()) {
    const source = new EventSource(url);
    source.addEventListener('open', () => onState('open'));
    source.addEventListener('error', () => onState(source.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting'));
    source.addEventListener('change', (event) => onChange(parseLossless(event.data), event.lastEventId));
    source.addEventListener('problem', (event) => {
      source.close();
      onProblem(JSON.parse(event.data));
    });
    return () => source.close();
  }
  // fetch streaming: the same events, with the bearer token, resumed from the last id.
  const controller = new AbortController();
  let lastId = '';
  let stopped = false;
  (async () => {
    while (!stopped) {
      try {
        const headers = { accept: 'text/event-stream', ...authHeaders() };
        if (lastId) headers['last-event-id'] = lastId;
        const response = await fetch(url, { headers, signal: controller.signal, cache: 'no-store' });
        if (!response.ok) {
          const problem = await response.json().catch(() => ({ status: response.status, title: response.statusText, type: 'about:blank', detail: '' }));
          if (response.status === 401) window.dispatchEvent(new CustomEvent('tidemark:unauthorized', { detail: problem }));
          onProblem(problem);
          return;
        }
        onState('open');
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, '\n');
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let event = 'message';
            let id = null;
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) continue;
              const colon = line.indexOf(':');
              const field = colon < 0 ? line : line.slice(0, colon);
              const v = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
              if (field === 'event') event = v;
              else if (field === 'data') data.push(v);
              else if (field === 'id') id = v;
            }
            if (id !== null) lastId = id;
            if (event === 'change') onChange(parseLossless(data.join('\n')), lastId);
            else if (event === 'problem') {
              onProblem(JSON.parse(data.join('\n')));
              return;
            }
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      onState('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  })();
  return () => {
    stopped = true;
    controller.abort();
  };
}

export async function render(root, _params, ctx) {
  const status = h('span', { class: 'live', id: 'feed-status' }, 'connecting');
  const filter = h('select', { 'aria-label': 'stream filter', id: 'feed-filter' }, h('option', { value: '' }, 'every stream'));
  const pause = h('button', { type: 'button', class: 'secondary small' }, 'Pause');
  const counters = h('div', { class: 'cards' });
  const chart = h('div', { class: 'card chart-card wide' });
  const list = h('tbody', {});
  const error = h('div', {});
  const times = []; // [time, op] of each change seen
  let seen = 0;
  let upserts = 0;
  let deletes = 0;
  let paused = false;
  let stop = () => {};

  put(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Feed'), status, h('div', { class: 'filters' }, filter, pause)),
    h('p', { class: 'muted' }, 'Every change of the mirror as it commits, from the moment this page opened (',
      h('code', {}, 'GET /v1/changes/stream'), ').'),
    error,
    h('div', { class: 'feed-top' }, counters, chart),
    h('table', { class: 'feed' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Changed'), h('th', {}, 'Stream'), h('th', {}, 'Key'), h('th', {}, 'Op'), h('th', { class: 'num' }, 'Rev'), h('th', {}, 'Record'))),
      list));

  const draw = () => {
    put(counters,
      stat('Changes', count(seen), 'since this page opened'),
      stat('Upserts', count(upserts)),
      stat('Deletes', count(deletes)));
    put(chart, h('div', { class: 'label' }, `Changes per second (last ${SPAN} s)`), perSecond(times, SPAN));
  };

  const onChange = (change) => {
    seen += 1;
    if (change.op === 'delete') deletes += 1;
    else upserts += 1;
    times.push([Date.now(), change.op === 'delete' ? 'delete' : 'upsert']);
    while (times.length && times[0][0] < Date.now() - SPAN * 1000) times.shift();
    if (paused) return;
    const full = h('pre', { class: 'code', hidden: true }, jsonText(change.record));
    const line = h('code', { class: 'preview' }, change.record === null ? 'null' : jsonLine(change.record));
    list.prepend(h('tr', { class: 'change', dataset: { stream: String(change.stream), key: String(change.key) } },
      h('td', {}, time(change.changed_at)),
      h('td', {}, String(change.stream)),
      h('td', {}, h('code', {}, String(change.key))),
      h('td', {}, badge(change.op)),
      h('td', { class: 'num' }, String(change.rev)),
      h('td', { class: 'record-cell', on: { click: () => { full.hidden = !full.hidden; line.hidden = !full.hidden; } } }, line, full)));
    while (list.childElementCount > KEEP) list.lastElementChild.remove();
  };

  const start = async () => {
    stop();
    put(error);
    status.textContent = 'connecting';
    status.className = 'live';
    try {
      const stream = filter.value;
      const head = await get('/v1/changes/head' + query({ stream }));
      if (!ctx.alive) return;
      stop = follow('/v1/changes/stream' + query({ since: head.until, stream }), {
        onChange,
        onState: (state) => {
          status.textContent = state === 'open' ? 'live' : state;
          status.className = `live ${state === 'open' ? 'on' : 'off'}`;
        },
        onProblem: (problem) => {
          status.textContent = 'stopped';
          status.className = 'live off';
          put(error, problemBox(problem));
        },
      });
    } catch (e) {
      status.textContent = 'stopped';
      status.className = 'live off';
      showError(error, e);
    }
  };

  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
  });
  filter.addEventListener('change', start);
  ctx.onLeave(() => stop());
  all('/v1/sources').then((sources) => {
    for (const src of sources) for (const st of src.streams) filter.append(h('option', { value: `${src.name}/${st.name}` }, `${src.name}/${st.name}`));
  }).catch(() => {});
  draw();
  ctx.every(1000, draw);
  await start();
}

function stat(label, value, hint) {
  return h('div', { class: 'card stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), hint ? h('div', { class: 'muted' }, hint) : null);
}
