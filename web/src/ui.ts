// What every view shares: the namespace in use, notices, confirmation,
// and how an informer's state reads on screen.

import { ApiError } from './api';
import { h } from './dom';
import type { Informer, Scope } from './watch';

const NS_KEY = 'wkube.ns';

/** The namespace the views show; "" means all namespaces. */
export function currentNs(): string {
  return sessionStorage.getItem(NS_KEY) ?? 'default';
}

export function setNs(ns: string): void {
  sessionStorage.setItem(NS_KEY, ns);
}

/** Where a namespaced create goes when "all namespaces" is selected. */
export function targetNs(): string {
  return currentNs() || 'default';
}

let notices: HTMLElement | null = null;

export function mountNotices(el: HTMLElement): void {
  notices = el;
}

/** A message for the user: errors stay until dismissed, others fade. */
export function notify(message: string | ApiError | unknown, kind: 'error' | 'info' = 'error'): void {
  const text = message instanceof ApiError ? message.describe() : message instanceof Error ? message.message : String(message);
  if (!notices) return;
  const close = h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss' }, '×');
  const note = h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, h('span', null, text), close);
  close.addEventListener('click', () => note.remove());
  notices.appendChild(note);
  if (kind === 'info') setTimeout(() => note.remove(), 4000);
  while (notices.childElementCount > 4) notices.firstElementChild?.remove();
}

/** Asks before something that cannot be undone; resolves true on "yes". */
export function confirmDialog(question: string, action: string): Promise<boolean> {
  return new Promise((resolve) => {
    const yes = h('button', { type: 'button', class: 'danger' }, action);
    const no = h('button', { type: 'button' }, 'Cancel');
    const dlg = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-q' },
      h('p', { id: 'confirm-q' }, question),
      h('div', { class: 'actions' }, no, yes));
    const done = (v: boolean) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    yes.addEventListener('click', () => done(true));
    no.addEventListener('click', () => done(false));
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.appendChild(dlg);
    dlg.showModal();
    no.focus();
  });
}

/** A line saying why a list is empty or stale; kept current. */
export function stateNote(scope: Scope, inf: Informer): HTMLElement {
  const el = h('p', { class: 'state', role: 'status' });
  const update = () => {
    el.hidden = inf.state === 'ready';
    el.className = `state ${inf.state}`;
    el.textContent =
      inf.state === 'loading' ? 'Loading…'
      : inf.state === 'forbidden' ? `Not allowed: ${inf.error?.message ?? ''}`
      : inf.state === 'error' ? (inf.error?.network ? 'Waiting for the server…' : `Error: ${inf.error?.describe() ?? ''}`)
      : '';
  };
  scope.add(inf.listen((c) => { if (c.type === 'STATE' || c.type === 'SYNC') update(); }));
  update();
  return el;
}

export function badge(text: string, tone: string): HTMLElement {
  return h('span', { class: `badge ${tone}` }, text);
}

export function link(href: string, text: string, label?: string): HTMLAnchorElement {
  return h('a', { href, 'aria-label': label }, text);
}

export function nsOf(ns: string | undefined): string {
  return ns ?? '';
}

export function section(title: string, ...children: (Node | null | false)[]): HTMLElement {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), ...children);
}

export function workloadHref(kind: string, ns: string, name: string): string {
  return `#/${kind}/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`;
}

export function yamlHref(path: string): string {
  return `#/yaml?path=${encodeURIComponent(path)}`;
}
