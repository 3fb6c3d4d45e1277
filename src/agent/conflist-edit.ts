// Edits a conflist's `plugins` array in its JSON text, so that chaining and unchaining
// nodemesh-cni touch only our entry: every other byte stays as the primary CNI wrote it (key
// order, spacing, its own formatting), and uninstall restores the file byte for byte.

/** Where a JSON value starting at `i` (after whitespace) ends, exclusive. The text is valid JSON. */
function valueEnd(text: string, i: number): number {
  const c = text[i];
  if (c === '"') {
    let k = i + 1;
    while (text[k] !== '"') k += text[k] === '\\' ? 2 : 1;
    return k + 1;
  }
  if (c === '{' || c === '[') {
    let depth = 0;
    for (let k = i; k < text.length; k++) {
      const ch = text[k];
      if (ch === '"') k = valueEnd(text, k) - 1;
      else if (ch === '{' || ch === '[') depth++;
      else if (ch === '}' || ch === ']') {
        depth--;
        if (depth === 0) return k + 1;
      }
    }
    return text.length;
  }
  const m = /^[^,\]}\s]+/.exec(text.slice(i));
  return i + (m ? m[0].length : 0);
}

const skipWs = (text: string, i: number) => {
  while (i < text.length && /\s/.test(text[i]!)) i++;
  return i;
};

/** The [start, end) spans of the top-level `plugins` array's elements, and the array's span. */
export function pluginSpans(text: string): { array: [number, number]; items: [number, number][] } | undefined {
  let i = skipWs(text, 0);
  if (text[i] !== '{') return undefined;
  i = skipWs(text, i + 1);
  while (text[i] === '"') {
    const keyEnd = valueEnd(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = skipWs(text, keyEnd);
    i = skipWs(text, i + 1); // past ':'
    const end = valueEnd(text, i);
    if (key === 'plugins' && text[i] === '[') {
      const items: [number, number][] = [];
      let k = skipWs(text, i + 1);
      while (text[k] !== ']') {
        const e = valueEnd(text, k);
        items.push([k, e]);
        k = skipWs(text, e);
        if (text[k] === ',') k = skipWs(text, k + 1);
      }
      return { array: [i, end], items };
    }
    i = skipWs(text, end);
    if (text[i] === ',') i = skipWs(text, i + 1);
  }
  return undefined;
}

const typeOf = (text: string, [s, e]: [number, number]): unknown => (JSON.parse(text.slice(s, e)) as { type?: unknown }).type;

/** `text` without every plugin entry of `type`; the rest of the text is untouched. */
export function removePluginText(text: string, type: string): string {
  for (;;) {
    const spans = pluginSpans(text);
    if (!spans) return text;
    const idx = spans.items.findIndex((sp) => typeOf(text, sp) === type);
    if (idx < 0) return text;
    const [s, e] = spans.items[idx]!;
    if (idx > 0) {
      // From the end of the previous element (its comma and the space before ours) to our end.
      text = text.slice(0, spans.items[idx - 1]![1]) + text.slice(e);
    } else if (spans.items.length > 1) {
      text = text.slice(0, s) + text.slice(spans.items[1]![0]);
    } else {
      text = text.slice(0, spans.array[0] + 1) + text.slice(spans.array[1] - 1);
    }
  }
}

/**
 * `text` with `entry` appended to its plugins array, formatted like the elements before it
 * (on its own line with their indentation, or inline). Undefined when the text has no
 * plugins array to append to.
 */
export function appendPluginText(text: string, entry: Record<string, unknown>): string | undefined {
  const spans = pluginSpans(text);
  if (!spans || spans.items.length === 0) return undefined;
  const last = spans.items.at(-1)!;
  const prevEnd = spans.items.length > 1 ? spans.items.at(-2)![1] : spans.array[0] + 1;
  // The separator before the last element: ",\n    " between two, or "\n    " after the '['.
  const sep = text.slice(prevEnd, last[0]).replace(/^\s*,/, '');
  const nl = sep.lastIndexOf('\n');
  let rendered: string;
  let lead: string;
  if (nl >= 0) {
    const indent = sep.slice(nl + 1);
    const unit = /\n( +|\t+)"/.exec(text.slice(last[0], last[1]))?.[1]?.slice(indent.length) || '  ';
    rendered = JSON.stringify(entry, null, unit).replaceAll('\n', '\n' + indent);
    lead = `,\n${indent}`;
  } else {
    rendered = JSON.stringify(entry);
    lead = `,${sep}`;
  }
  return text.slice(0, last[1]) + lead + rendered + text.slice(last[1]);
}
