// Where a JSON pointer (RFC 6901) lands in a JSON text: the spec editor puts a rejected
// spec's problem at the field its `pointer` names. A small parser of its own, because
// JSON.parse keeps no positions.

/**
 * Every value of the text by pointer: {start, end, keyStart} (character offsets; keyStart
 * is where the member's name starts, for object members). Throws a SyntaxError with
 * `offset` on text that is not JSON.
 */
export function positions(text) {
  const found = new Map();
  let i = 0;

  const fail = (message) => {
    const error = new SyntaxError(`${message} at line ${lineOf(text, i) + 1}`);
    error.offset = i;
    throw error;
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const string = () => {
    if (text[i] !== '"') fail('expected a string');
    const start = i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++;
      i++;
    }
    if (i >= text.length) fail('unterminated string');
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const value = (pointer, keyStart) => {
    ws();
    const start = i;
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') i++;
      else {
        for (;;) {
          ws();
          const memberStart = i;
          const name = string();
          ws();
          if (text[i] !== ':') fail('expected ":"');
          i++;
          value(`${pointer}/${escape(name)}`, memberStart);
          ws();
          if (text[i] === ',') { i++; continue; }
          if (text[i] === '}') { i++; break; }
          fail('expected "," or "}"');
        }
      }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') i++;
      else {
        for (let n = 0; ; n++) {
          value(`${pointer}/${n}`);
          ws();
          if (text[i] === ',') { i++; continue; }
          if (text[i] === ']') { i++; break; }
          fail('expected "," or "]"');
        }
      }
    } else if (c === '"') {
      string();
    } else {
      const m = /^(?:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 400));
      if (!m) fail('unexpected character');
      i += m[0].length;
    }
    found.set(pointer, { start, end: i, keyStart: keyStart ?? start });
  };

  value('');
  ws();
  if (i < text.length) fail('unexpected text after the document');
  return found;
}

function escape(name) {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** The 0-based line of a character offset. */
export function lineOf(text, offset) {
  let line = 0;
  for (let k = 0; k < offset && k < text.length; k++) if (text[k] === '\n') line++;
  return line;
}

/** The offset where a 0-based line starts. */
export function lineStart(text, line) {
  let offset = 0;
  for (let n = 0; n < line; n++) {
    const next = text.indexOf('\n', offset);
    if (next < 0) return text.length;
    offset = next + 1;
  }
  return offset;
}

/**
 * Locates a problem in the text. With a pointer: the member it names, or, when the field
 * is missing, the nearest enclosing value that exists ({missing: 'name'} says which).
 * Without one, a "line L column C" in the detail (serde's syntax errors) is used.
 * Answers {line, start, end, pointer, missing} or null.
 */
export function locate(text, problem) {
  if (typeof problem.pointer === 'string') {
    let map;
    try {
      map = positions(text);
    } catch {
      map = null;
    }
    if (map) {
      let pointer = problem.pointer;
      const missing = [];
      while (!map.has(pointer) && pointer !== '') {
        const cut = pointer.lastIndexOf('/');
        missing.unshift(pointer.slice(cut + 1).replace(/~1/g, '/').replace(/~0/g, '~'));
        pointer = pointer.slice(0, Math.max(cut, 0));
      }
      const at = map.get(pointer);
      if (at) {
        return { line: lineOf(text, at.keyStart), start: at.keyStart, end: at.end, pointer, missing: missing.join('/') || null };
      }
    }
  }
  const m = /line (\d+),? column (\d+)/.exec(problem.detail || '');
  if (m) {
    const line = Math.max(Number(m[1]) - 1, 0);
    const start = Math.min(lineStart(text, line) + Math.max(Number(m[2]) - 1, 0), text.length);
    return { line, start, end: start, pointer: null, missing: null };
  }
  return null;
}
