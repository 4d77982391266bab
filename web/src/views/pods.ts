// Every pod of the namespace, live: a windowed table whose rows change one
// at a time as the watch reports them.

import { KObj, R, inNs } from '../api';
import { h, fill, setText } from '../dom';
import { Column, Table, feed } from '../table';
import { currentNs, section, stateNote } from '../ui';
import { age, keyOf, podReady, podRestarts, podStatus, statusTone } from '../util';
import type { Scope } from '../watch';

export function podColumns(allNs: boolean): Column[] {
  const cols: Column[] = [
    {
      title: 'Name', width: 'minmax(12rem, 2.5fr)',
      node: (p) => h('a', { href: podHref(p) }),
      update: (a, p) => { setText(a, p.metadata.name); a.setAttribute('href', podHref(p)); },
    },
  ];
  if (allNs) cols.push({ title: 'Namespace', width: 'minmax(6rem, 1fr)', text: (p) => p.metadata.namespace ?? '' });
  cols.push(
    { title: 'Status', width: 'minmax(7rem, 1fr)', text: podStatus, cls: (p) => `status ${statusTone(podStatus(p))}` },
    { title: 'Ready', width: '4.5rem', text: podReady },
    { title: 'Restarts', width: '5.5rem', text: (p) => String(podRestarts(p)) },
    { title: 'Node', width: 'minmax(6rem, 1fr)', text: (p) => p.spec?.nodeName ?? '' },
    { title: 'IP', width: 'minmax(7rem, 1fr)', text: (p) => p.status?.podIP ?? '' },
    { title: 'Age', width: '4rem', text: (p) => age(p.metadata.creationTimestamp) },
  );
  return cols;
}

export function podHref(p: KObj): string {
  return `#/pod/${encodeURIComponent(p.metadata.namespace ?? '')}/${encodeURIComponent(p.metadata.name)}`;
}

export function pods(scope: Scope, main: HTMLElement): void {
  const ns = currentNs();
  const inf = scope.informer(inNs(R.pods, ns));
  const table = new Table(ns ? `Pods in ${ns}` : 'Pods in all namespaces', podColumns(!ns), keyOf, undefined,
    ns ? `No pods in namespace ${ns}.` : 'No pods.');
  const count = h('span', { class: 'count', role: 'status' });
  fill(main, h('h1', null, 'Pods ', count), section('List', stateNote(scope, inf), table.el));
  const feedTable = feed(table, inf.items);
  let firstPaint = false;
  scope.watch(inf, (c) => {
    feedTable(c);
    setText(count, `(${table.size})`);
    if (!firstPaint && c.type === 'SYNC') {
      firstPaint = true;
      // For the benchmark: when the first rows are on screen.
      requestAnimationFrame(() => performance.mark('wkube-pods-painted'));
    }
  });
  // Ages move on without events.
  scope.every(10_000, () => table.refresh());
}
