// A keyed, windowed table: rows are kept sorted by key, only the rows in
// view (plus a margin) exist in the DOM, and a change to one object
// touches that object's row alone. With thousands of pods a watch event
// costs a binary search and a few text nodes.

import { h, setText } from './dom';
import type { KObj } from './api';

export interface Column {
  title: string;
  /** Grid track, e.g. "2fr" or "6rem". */
  width: string;
  /** Text, or a node built once per row (then `update` keeps it current). */
  text?: (o: KObj) => string;
  node?: (o: KObj) => HTMLElement;
  update?: (el: HTMLElement, o: KObj) => void;
  cls?: (o: KObj) => string;
}

interface Row {
  el: HTMLElement;
  cells: HTMLElement[];
  obj: KObj;
  index: number;
}

const ROW_H = 36;
const OVERSCAN = 8;
/** Rows shown before the list scrolls inside itself. */
const MAX_VISIBLE = 18;

export class Table {
  readonly el: HTMLElement;
  private viewport: HTMLElement;
  private spacer: HTMLElement;
  private empty: HTMLElement;
  private keys: string[] = [];
  private items = new Map<string, KObj>();
  private rows = new Map<string, Row>();
  private pending = false;

  constructor(
    label: string,
    private columns: Column[],
    readonly keyOf: (o: KObj) => string,
    private compare: (a: string, b: string) => number = (a, b) => (a < b ? -1 : a > b ? 1 : 0),
    emptyText = 'Nothing here.',
    minWidth = 640,
  ) {
    const header = h('div', { class: 'row head', role: 'row', 'aria-rowindex': 1 },
      columns.map((c) => h('div', { role: 'columnheader' }, c.title)));
    this.spacer = h('div', { class: 'spacer', role: 'rowgroup' });
    this.viewport = h('div', { class: 'viewport' }, this.spacer);
    this.empty = h('p', { class: 'empty' }, emptyText);
    this.el = h('div', { class: 'table', role: 'table', 'aria-label': label, 'aria-rowcount': 1 },
      h('div', { class: 'scroller' }, h('div', { role: 'rowgroup' }, header), this.viewport), this.empty);
    this.el.style.setProperty('--cols', columns.map((c) => c.width).join(' '));
    this.el.style.setProperty('--minw', `${minWidth}px`);
    this.viewport.addEventListener('scroll', () => this.schedule(), { passive: true });
  }

  get size(): number { return this.keys.length; }

  private find(key: string): number {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.compare(this.keys[mid], key) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Replaces every row (a list or relist). */
  reset(objs: Iterable<KObj>): void {
    this.items.clear();
    for (const o of objs) this.items.set(this.keyOf(o), o);
    this.keys = [...this.items.keys()].sort(this.compare);
    for (const r of this.rows.values()) r.el.remove();
    this.rows.clear();
    this.layout();
  }

  upsert(o: KObj): void {
    const key = this.keyOf(o);
    const had = this.items.has(key);
    this.items.set(key, o);
    if (had) {
      const row = this.rows.get(key);
      if (row) {
        row.obj = o;
        this.fillRow(row);
      }
      return;
    }
    this.keys.splice(this.find(key), 0, key);
    this.layout();
  }

  remove(key: string): void {
    if (!this.items.delete(key)) return;
    const i = this.find(key);
    if (this.keys[i] === key) this.keys.splice(i, 1);
    const row = this.rows.get(key);
    if (row) {
      row.el.remove();
      this.rows.delete(key);
    }
    this.layout();
  }

  /** Re-renders the visible rows (e.g. ages), without touching the others. */
  refresh(): void {
    for (const r of this.rows.values()) this.fillRow(r);
  }

  private layout(): void {
    const n = this.keys.length;
    this.el.setAttribute('aria-rowcount', String(n + 1));
    this.spacer.style.height = `${n * ROW_H}px`;
    this.viewport.style.height = `${Math.min(n, MAX_VISIBLE) * ROW_H}px`;
    this.empty.hidden = n > 0;
    this.schedule();
  }

  private schedule(): void {
    // Rows are placed in the same task when the list is small (so a test
    // or a screen reader sees them at once), else once per frame.
    if (this.keys.length <= 200) {
      this.render();
      return;
    }
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  private render(): void {
    const height = this.viewport.clientHeight || MAX_VISIBLE * ROW_H;
    const top = this.viewport.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(this.keys.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    const want = new Set<string>();
    for (let i = first; i < last; i++) {
      const key = this.keys[i];
      want.add(key);
      let row = this.rows.get(key);
      if (!row) {
        row = this.makeRow(this.items.get(key)!);
        this.rows.set(key, row);
        this.spacer.appendChild(row.el);
        row.index = -1;
      }
      if (row.index !== i) {
        row.index = i;
        row.el.style.transform = `translateY(${i * ROW_H}px)`;
        row.el.setAttribute('aria-rowindex', String(i + 2));
      }
    }
    for (const [key, row] of this.rows) {
      if (!want.has(key)) {
        row.el.remove();
        this.rows.delete(key);
      }
    }
  }

  private makeRow(o: KObj): Row {
    const cells = this.columns.map((c) => {
      const cell = h('div', { role: 'cell' });
      if (c.node) cell.appendChild(c.node(o));
      return cell;
    });
    const row: Row = { el: h('div', { class: 'row', role: 'row' }, cells), cells, obj: o, index: -1 };
    this.fillRow(row);
    return row;
  }

  private fillRow(row: Row): void {
    this.columns.forEach((c, i) => {
      const cell = row.cells[i];
      if (c.text) setText(cell, c.text(row.obj));
      else if (c.update && cell.firstElementChild) c.update(cell.firstElementChild as HTMLElement, row.obj);
      if (c.cls) {
        const cls = c.cls(row.obj);
        if (cell.className !== cls) cell.className = cls;
      }
    });
  }
}

/** Feeds a table from informer changes. */
export function feed(table: Table, items: Map<string, KObj>, filter: (o: KObj) => boolean = () => true) {
  return (c: { type: string; obj?: KObj; old?: KObj }): void => {
    if (c.type === 'SYNC') table.reset([...items.values()].filter(filter));
    else if (c.type === 'DELETED' && c.obj) table.remove(table.keyOf(c.obj));
    else if ((c.type === 'ADDED' || c.type === 'MODIFIED') && c.obj) {
      if (filter(c.obj)) table.upsert(c.obj);
      else table.remove(table.keyOf(c.obj));
    }
  };
}
