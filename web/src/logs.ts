// Log panes: one container's log (followed, or the previous run), or the
// logs of every pod of a workload with the pod's name on each line.

import { ApiError, R, inNs, objectPath, streamLines } from './api';
import { h } from './dom';
import type { Scope } from './watch';

/** Lines a pane keeps; older ones are dropped. */
const MAX_LINES = 5000;

export class LogPane {
  readonly pre: HTMLElement;
  private lines = 0;
  private pendingText = '';
  private scheduled = false;

  constructor(label: string) {
    this.pre = h('pre', { class: 'logs', tabindex: '0', 'aria-label': label });
  }

  clear(): void {
    this.pre.replaceChildren();
    this.lines = 0;
  }

  /** Appends a line; the DOM is written once per frame. */
  add(line: string): void {
    this.pendingText += line + '\n';
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      const stick = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 8;
      this.pre.appendChild(document.createTextNode(this.pendingText));
      this.lines += this.pendingText.split('\n').length - 1;
      this.pendingText = '';
      while (this.lines > MAX_LINES && this.pre.firstChild) {
        const t = this.pre.firstChild.textContent ?? '';
        this.lines -= t.split('\n').length - 1;
        this.pre.firstChild.remove();
      }
      if (stick) this.pre.scrollTop = this.pre.scrollHeight;
    });
  }

  note(text: string, cls = 'note'): void {
    this.pre.appendChild(h('span', { class: cls }, text + '\n'));
  }
}

export interface LogOptions {
  container?: string;
  follow?: boolean;
  previous?: boolean;
  tailLines?: number;
}

export function logPath(ns: string, pod: string, o: LogOptions): string {
  const q = new URLSearchParams();
  if (o.container) q.set('container', o.container);
  if (o.follow) q.set('follow', 'true');
  if (o.previous) q.set('previous', 'true');
  q.set('tailLines', String(o.tailLines ?? 1000));
  return `${objectPath(inNs(R.pods, ns), pod)}/log?${q}`;
}

/** Streams one pod's log into a pane until the signal aborts. */
export async function streamInto(pane: LogPane, ns: string, pod: string, o: LogOptions, signal: AbortSignal, prefix = ''): Promise<void> {
  try {
    await streamLines(logPath(ns, pod, o), (line) => pane.add(prefix + line), signal);
    if (o.follow && !signal.aborted) pane.note(`${prefix}(log stream ended)`);
  } catch (e) {
    if ((e as Error).name === 'AbortError') return;
    pane.note(`${prefix}${e instanceof ApiError ? e.describe() : String(e)}`, 'error');
  }
}

/** A child signal of the scope's, aborted on its own as well. */
export function childSignal(scope: Scope): AbortController {
  const c = new AbortController();
  scope.abort.signal.addEventListener('abort', () => c.abort(), { once: true });
  return c;
}
