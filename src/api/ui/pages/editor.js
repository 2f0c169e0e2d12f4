// Register or edit a source: a JSON editor that puts a rejected spec's problem at the
// field its `pointer` names (or at the line and column of a syntax error).
import { h, put, href, action, prose } from '../dom.js';
import { api, get, problemBox, jsonText, ApiProblem } from '../api.js';
import { locate, lineStart } from '../jsonpos.js';

const LINE = 20; // px, as in style.css (.editor)
const PAD = 8;

/** The example sources of the repository (`examples/sources/`), served beside the page. */
const EXAMPLES = ['insales', 'pos', 'carrot', 'reqon', 'link'];

export async function render(root, { source }, ctx) {
  const editing = source !== undefined;
  const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
  const mark = h('div', { class: 'mark', hidden: true });
  const backdrop = h('div', { class: 'backdrop', 'aria-hidden': 'true' }, mark);
  const text = h('textarea', { class: 'editor-text', id: 'spec', wrap: 'off', spellcheck: 'false', autocomplete: 'off', 'aria-label': 'source spec (JSON)' });
  const callout = h('div', { class: 'callout', id: 'spec-callout', role: 'alert', hidden: true });
  const measure = h('span', { class: 'measure', 'aria-hidden': 'true' }, 'x'.repeat(100));
  const area = h('div', { class: 'editor-area' }, measure, backdrop, text, callout);
  const editor = h('div', { class: 'editor' }, gutter, area);
  const result = h('div', { id: 'spec-result', class: 'flash-area' });
  const warning = h('div', {});
  let at = null; // the located problem: {line, ...}

  const layout = () => {
    const lines = text.value.split('\n').length;
    if (gutter.childElementCount !== lines) {
      put(gutter, Array.from({ length: lines }, (_, i) => h('div', {}, String(i + 1))));
    }
    for (const el of gutter.querySelectorAll('.err')) el.classList.remove('err');
    gutter.style.transform = `translateY(${-text.scrollTop}px)`;
    if (at) {
      gutter.children[at.line]?.classList.add('err');
      mark.hidden = false;
      mark.style.top = `${PAD + at.line * LINE - text.scrollTop}px`;
      callout.hidden = false;
      callout.style.top = `${PAD + (at.line + 1) * LINE - text.scrollTop + 4}px`;
      // The arrow points at the field's first character; the box stays inside the editor.
      const ch = measure.getBoundingClientRect().width / 100 || 7.8;
      const x = 10 + (at.start - lineStart(text.value, at.line)) * ch - text.scrollLeft;
      const left = Math.max(4, Math.min(x - 24, area.clientWidth - callout.offsetWidth - 8));
      callout.style.left = `${left}px`;
      callout.style.setProperty('--arrow', `${Math.max(8, Math.min(x - left - 6, callout.offsetWidth - 20))}px`);
    } else {
      mark.hidden = true;
      callout.hidden = true;
    }
  };
  const clearProblem = () => {
    at = null;
    layout();
  };
  const setText = (value) => {
    text.value = value;
    clearProblem();
    put(result);
    put(warning, /"redacted"\s*:\s*true/.test(value)
      ? h('p', { class: 'warn' }, 'Inline secrets read {"redacted": true}: they are never returned. Give them again ({"value": "..."}, or better {"env": "NAME"}) before saving, or the server refuses the spec.')
      : null);
  };

  text.addEventListener('scroll', layout);
  text.addEventListener('input', clearProblem);
  text.addEventListener('keydown', (event) => {
    if (event.key === 'Tab' && !event.shiftKey) {
      event.preventDefault();
      text.setRangeText('  ', text.selectionStart, text.selectionEnd, 'end');
      clearProblem();
    }
  });

  /** Shows a problem at its field in the text, and in full below. */
  const showProblem = (problem) => {
    at = locate(text.value, problem);
    const where = at
      ? at.missing
        ? `missing here: ${at.missing}`
        : at.pointer !== null ? `at ${problem.pointer || '(the whole document)'}` : `line ${at.line + 1}`
      : 'the field is not in the text';
    put(callout,
      h('div', { class: 'callout-head' }, h('span', { class: 'status' }, String(problem.status)), ' ', h('code', {}, String(problem.type)), ' ', h('strong', {}, String(problem.title))),
      h('div', { class: 'detail' }, ...prose(problem.detail ?? '')),
      h('div', { class: 'where' }, where));
    put(result, problemBox(problem, at ? h('p', { class: 'muted' }, `Marked in the editor at line ${at.line + 1}.`) : null));
    layout();
    if (at) {
      const view = text.clientHeight;
      const y = PAD + at.line * LINE;
      if (y < text.scrollTop + LINE || y > text.scrollTop + view - 4 * LINE) text.scrollTop = Math.max(0, y - view / 3);
      text.focus({ preventScroll: true });
      text.setSelectionRange(at.start, at.end);
      layout();
    }
  };

  const submit = action(editing ? 'Save' : 'Register', async () => {
    put(result);
    clearProblem();
    try {
      const saved = editing
        ? await api('PUT', `/v1/sources/${encodeURIComponent(source)}`, text.value)
        : await api('POST', '/v1/sources', text.value);
      const scheduled = saved.streams.filter((st) => st.schedule).length;
      put(result, h('div', { class: 'flash ok', role: 'status' },
        h('strong', {}, `${editing ? 'Saved' : 'Registered'} ${saved.name}`), ` with ${saved.streams.length} stream${saved.streams.length === 1 ? '' : 's'}: `,
        saved.streams.map((st, i) => [i ? ', ' : '', h('a', { href: href('streams', saved.name, st.name) }, st.name)]),
        '. ',
        scheduled && !editing ? `${scheduled} ha${scheduled === 1 ? 's' : 've'} a schedule, so a first job is queued now. ` : '',
        h('a', { href: '#/sources' }, 'All sources'), ' · ', h('a', { href: `#/jobs` }, 'Jobs')));
    } catch (e) {
      if (e instanceof ApiProblem) showProblem(e.problem);
      else put(result, h('div', { class: 'problem' }, String(e.message)));
    }
  }, { id: 'spec-submit' });

  const format = action('Format', async () => {
    try {
      setText(jsonText(JSON.parse(text.value)));
    } catch (e) {
      const m = /position (\d+)/.exec(e.message);
      put(result, problemBox({ status: 0, type: 'not-json', title: 'Not JSON (checked in the browser)', detail: e.message }));
      if (m) {
        text.focus();
        text.setSelectionRange(Number(m[1]), Number(m[1]) + 1);
      }
    }
  }, { class: 'secondary' });

  const examples = h('select', { id: 'spec-example', 'aria-label': 'start from an example' },
    h('option', { value: '' }, 'Start from an example…'),
    EXAMPLES.map((name) => h('option', { value: name }, `examples/sources/${name}.json`)));
  examples.addEventListener('change', async () => {
    if (!examples.value) return;
    const response = await fetch(`/ui/examples/${examples.value}.json`);
    setText(await response.text());
    examples.value = '';
  });

  put(root,
    h('nav', { class: 'crumbs' }, h('a', { href: '#/sources' }, 'Sources'), ' / ', editing ? [h('span', {}, source), ' / edit'] : 'register'),
    h('div', { class: 'page-head' }, h('h1', {}, editing ? `Edit ${source}` : 'Register a source'),
      editing ? null : h('div', { class: 'filters' }, examples)),
    h('div', { class: 'editor-grid' },
      h('div', {}, warning, editor, h('div', { class: 'buttons' }, submit, format, h('a', { class: 'button secondary', href: '#/sources' }, 'Cancel')), result),
      h('aside', { class: 'card help' },
        h('h2', {}, 'The spec'),
        h('p', {}, 'A source is its base URL, its auth and its streams; each stream names its request, where its records are, and how to page (',
          h('code', {}, 'keyset'), ', ', h('code', {}, 'token'), ', ', h('code', {}, 'position'), ', ', h('code', {}, 'offset'), ', ',
          h('code', {}, 'link'), ', ', h('code', {}, 'none'), ').'),
        h('p', {}, 'The server checks the whole spec. When it refuses one, its problem (status, type, title, detail) is shown at the field its ',
          h('code', {}, 'pointer'), ' names.'),
        h('p', {}, 'Upstream secrets: prefer ', h('code', {}, '{"env": "NAME"}'), ' (read from the server\u2019s environment) to inline values.'),
        h('p', {}, 'Every field: ', h('a', { href: '/docs/#/sources' }, 'SourceSpec in the API docs'), '.'))));

  if (editing) {
    try {
      const current = await get(`/v1/sources/${encodeURIComponent(source)}`, { lossless: true });
      delete current.created_at;
      delete current.updated_at;
      setText(jsonText(current));
    } catch (e) {
      put(result, problemBox(e));
    }
  } else {
    setText(STARTER);
  }
  layout();
  const resize = () => layout();
  window.addEventListener('resize', resize);
  ctx.onLeave(() => window.removeEventListener('resize', resize));
}

const STARTER = `{
  "name": "shop",
  "base_url": "http://127.0.0.1:9000",
  "streams": [
    {
      "name": "products",
      "request": {"path": "/insales/products.json", "query": {"with_deleted": "true"}},
      "records": {"path": "", "key": "/id", "updated_at": "/updated_at",
                  "deleted": {"pointer": "/archived", "equals": true}},
      "pagination": {"type": "keyset", "since_param": "updated_since", "id_param": "from_id",
                     "limit_param": "per_page", "limit": 250},
      "schedule": {"every_seconds": 60}
    }
  ]
}
`;
