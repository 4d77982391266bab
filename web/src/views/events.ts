// Events of the namespace, newest first.

import { KObj, R, inNs } from '../api';
import { h, fill } from '../dom';
import { Column, Table, feed } from '../table';
import { currentNs, section, stateNote } from '../ui';
import { age } from '../util';
import type { Scope } from '../watch';

function when(e: KObj): string {
  return e.lastTimestamp || e.eventTime || e.firstTimestamp || e.metadata.creationTimestamp || '';
}

export function eventColumns(withObject: boolean): Column[] {
  const cols: Column[] = [
    { title: 'Age', width: '4rem', text: (e) => age(when(e)) },
    { title: 'Type', width: '6rem', text: (e) => e.type ?? '', cls: (e) => `status ${e.type === 'Warning' ? 'bad' : 'idle'}` },
    { title: 'Reason', width: 'minmax(7rem, 1fr)', text: (e) => e.reason ?? '' },
  ];
  if (withObject) cols.push({ title: 'Object', width: 'minmax(9rem, 1.5fr)', text: (e) => `${(e.involvedObject?.kind ?? '').toLowerCase()}/${e.involvedObject?.name ?? ''}` });
  cols.push({ title: 'Message', width: 'minmax(14rem, 3fr)', text: (e) => `${e.message ?? ''}${(e.count ?? 1) > 1 ? ` (×${e.count})` : ''}` });
  return cols;
}

/** Sort key: newest first, then by name. */
function eventKey(e: KObj): string {
  const t = Date.parse(when(e)) || 0;
  return `${(9e15 - t).toString().padStart(16, '0')} ${e.metadata.namespace ?? ''}/${e.metadata.name}`;
}

export function events(scope: Scope, main: HTMLElement): void {
  const ns = currentNs();
  const inf = scope.informer(inNs(R.events, ns));
  // The key carries the time, so an updated event would get a new key:
  // keep the key it was first shown with.
  const keys = new Map<string, string>();
  const keyFor = (e: KObj) => {
    const id = `${e.metadata.namespace}/${e.metadata.name}`;
    let k = keys.get(id);
    if (!k) keys.set(id, (k = eventKey(e)));
    return k;
  };
  const table = new Table('Events', eventColumns(true), keyFor, undefined, 'No events.', 720);
  const feedTable = feed(table, inf.items);
  fill(main, h('h1', null, 'Events'), section('Recent', stateNote(scope, inf), table.el));
  scope.watch(inf, (c) => {
    if (c.type === 'SYNC') keys.clear();
    feedTable(c);
    if (c.type === 'DELETED') keys.delete(`${c.obj.metadata.namespace}/${c.obj.metadata.name}`);
  });
}
