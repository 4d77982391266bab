// YAML for people: objects dumped for editing, and the line of the text a
// field path of a validation error ("spec.template.spec.containers[0].image")
// names, found by indentation in whatever the user typed.

import { dump, load } from 'js-yaml';

export function toYaml(o: unknown): string {
  return dump(o, { noRefs: true, lineWidth: -1, sortKeys: false });
}

export function fromYaml(text: string): unknown {
  return load(text);
}

/** The path's steps: keys and list indexes. */
export function steps(field: string): (string | number)[] {
  const out: (string | number)[] = [];
  const re = /([^.[\]]+)|\[(\d+)\]/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(field))) out.push(m[2] !== undefined ? parseInt(m[2], 10) : m[1]);
  return out;
}

interface Line { indent: number; dash: boolean; keyCol: number; key: string | null; blank: boolean }

function parseLine(text: string): Line {
  const m = /^(\s*)(-\s+)?(?:(["']?)([^"'#:\s][^"':]*?)\3\s*:(?:\s|$))?/.exec(text)!;
  const indent = m[1].length;
  const dash = Boolean(m[2]);
  const keyCol = indent + (m[2]?.length ?? 0);
  const blank = text.trim() === '' || text.trim().startsWith('#');
  return { indent, dash, keyCol, key: m[4] ?? null, blank };
}

/**
 * The 0-based line a field path points at, or the closest line found on
 * the way (-1 when not even the first step is there).
 */
export function lineOf(text: string, field: string): number {
  const lines = text.split('\n').map(parseLine);
  let lo = 0;
  let hi = lines.length;
  let parentCol = -1;
  let found = -1;
  for (const step of steps(field)) {
    if (typeof step === 'string') {
      let childCol = Infinity;
      for (let i = lo; i < hi; i++) {
        const l = lines[i];
        if (!l.blank && l.key !== null && l.keyCol > parentCol) childCol = Math.min(childCol, l.keyCol);
      }
      let at = -1;
      for (let i = lo; i < hi; i++) {
        const l = lines[i];
        if (l.key === step && l.keyCol === childCol) { at = i; break; }
      }
      if (at < 0) return found;
      found = at;
      parentCol = childCol;
      let end = at + 1;
      while (end < hi) {
        const l = lines[end];
        if (!l.blank && (l.indent < childCol || (l.indent === childCol && !l.dash))) break;
        end++;
      }
      lo = at + 1;
      hi = end;
    } else {
      let dashCol = Infinity;
      for (let i = lo; i < hi; i++) if (!lines[i].blank && lines[i].dash) dashCol = Math.min(dashCol, lines[i].indent);
      const items: number[] = [];
      for (let i = lo; i < hi; i++) if (lines[i].dash && lines[i].indent === dashCol) items.push(i);
      if (step >= items.length) return found;
      found = items[step];
      lo = items[step];
      hi = step + 1 < items.length ? items[step + 1] : hi;
      parentCol = dashCol;
    }
  }
  return found;
}
