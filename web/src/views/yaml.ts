// Any object as YAML: read it, edit it, apply it (PUT). A validation
// error (422) is shown beside the line of each field it names.

import { ApiError, Cause, KObj, call, gate } from '../api';
import { h, fill, setText } from '../dom';
import { notify, section } from '../ui';
import { fromYaml, lineOf, toYaml } from '../yaml';
import type { Scope } from '../watch';

/** What the RBAC question for a PUT on this path is. */
function accessOf(path: string): { group: string; resource: string; namespace: string; name: string } | null {
  const m = /^\/(?:api\/v1|apis\/([^/]+)\/[^/]+)(?:\/namespaces\/([^/]+))?\/([^/]+)\/([^/]+)$/.exec(path);
  if (!m) return null;
  return { group: m[1] ?? '', namespace: decodeURIComponent(m[2] ?? ''), resource: m[3], name: decodeURIComponent(m[4]) };
}

export function yamlView(scope: Scope, main: HTMLElement, _args: string[], query: URLSearchParams): void {
  const path = query.get('path') ?? '';
  const title = h('h1', null, 'YAML ', h('code', null, path));
  const editor = h('textarea', { id: 'yaml', class: 'yaml', spellcheck: 'false', autocapitalize: 'off', rows: 30, 'aria-describedby': 'yaml-errors' });
  const gutter = h('pre', { class: 'gutter', 'aria-hidden': 'true' });
  const errors = h('div', { id: 'yaml-errors', class: 'diagnostics', role: 'alert' });
  const apply = h('button', { type: 'button', 'data-action': 'apply' }, 'Apply');
  const reload = h('button', { type: 'button' }, 'Reload');
  const status = h('p', { class: 'hint', role: 'status' });
  const a = accessOf(path);
  if (a) gate(apply, { verb: 'update', ...a }, `update ${a.resource}`);
  fill(main, title,
    section('Edit', h('div', { class: 'toolbar' }, apply, reload, status),
      h('label', { for: 'yaml' }, 'The object, as YAML (applied with PUT)'),
      h('div', { class: 'editor' }, gutter, editor), errors));

  let marked = new Map<number, string[]>();
  const drawGutter = () => {
    const n = editor.value.split('\n').length;
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(marked.has(i) ? `! ${i + 1}` : String(i + 1));
    gutter.textContent = lines.join('\n');
  };
  editor.addEventListener('input', drawGutter);
  editor.addEventListener('scroll', () => { gutter.scrollTop = editor.scrollTop; });

  const load = async () => {
    try {
      const o: KObj = await call('GET', path, undefined, { signal: scope.abort.signal });
      delete o.metadata.managedFields;
      editor.value = toYaml(o);
      setText(status, `resourceVersion ${o.metadata.resourceVersion}`);
      showCauses([]);
    } catch (e) {
      if ((e as Error).name !== 'AbortError') fill(errors, h('p', { class: 'error' }, e instanceof ApiError ? e.describe() : String(e)));
    }
  };

  const goTo = (line: number) => {
    const text = editor.value;
    let start = 0;
    for (let i = 0; i < line; i++) start = text.indexOf('\n', start) + 1;
    const end = text.indexOf('\n', start);
    editor.focus();
    editor.setSelectionRange(start, end < 0 ? text.length : end);
    // Bring the line into view: lines are of equal height.
    const lh = editor.scrollHeight / Math.max(1, text.split('\n').length);
    editor.scrollTop = Math.max(0, lh * line - editor.clientHeight / 3);
  };

  const showCauses = (causes: Cause[], message = '') => {
    marked = new Map();
    const text = editor.value;
    const lines = text.split('\n');
    const items = causes.map((c) => {
      const line = c.field ? lineOf(text, c.field) : -1;
      if (line >= 0) marked.set(line, [...(marked.get(line) ?? []), c.message ?? '']);
      const jump = h('button', { type: 'button', class: 'link', disabled: line < 0 }, line >= 0 ? `line ${line + 1}` : 'field not in the text');
      if (line >= 0) jump.addEventListener('click', () => goTo(line));
      return h('li', { class: 'cause', 'data-field': c.field ?? '' },
        h('div', null, h('code', { class: 'field' }, c.field ?? '(object)'), ' ', jump),
        line >= 0 ? h('pre', { class: 'excerpt' }, `${String(line + 1).padStart(4)} | ${lines[line]}`) : null,
        h('div', { class: 'message' }, c.message ?? ''));
    });
    fill(errors, message ? h('p', { class: 'error' }, message) : null, items.length ? h('ul', null, items) : null);
    drawGutter();
  };

  apply.addEventListener('click', async () => {
    let obj: unknown;
    try {
      obj = fromYaml(editor.value);
    } catch (e: any) {
      const line = e?.mark?.line;
      showCauses(line !== undefined ? [] : [], `Not valid YAML: ${e?.reason ?? e?.message ?? e}${line !== undefined ? ` (line ${line + 1})` : ''}`);
      if (line !== undefined) { marked.set(line, ['YAML']); drawGutter(); goTo(line); }
      return;
    }
    apply.disabled = true;
    try {
      const saved: KObj = await call('PUT', path, obj);
      delete saved.metadata.managedFields;
      editor.value = toYaml(saved);
      showCauses([]);
      setText(status, `Applied: resourceVersion ${saved.metadata.resourceVersion}`);
      notify('Applied.', 'info');
    } catch (e) {
      if (e instanceof ApiError && e.status === 422) {
        showCauses(e.causes, 'The server refused the object:');
        const first = e.causes.map((c) => (c.field ? lineOf(editor.value, c.field) : -1)).find((l) => l >= 0);
        if (first !== undefined) goTo(first);
      } else if (e instanceof ApiError && e.status === 409) {
        showCauses([], `${e.message}. Reload to get the current object, then edit again.`);
      } else {
        showCauses([], e instanceof ApiError ? e.describe() : String(e));
      }
    } finally {
      apply.disabled = apply.dataset.denied === 'true';
    }
  });
  reload.addEventListener('click', () => void load());
  void load().then(drawGutter);
}
