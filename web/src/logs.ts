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
    // After the lines before it, which may still wait for their frame.
    if (this.pendingText) {
      this.pre.appendChild(document.createTextNode(this.pendingText));
      this.lines += this.pendingText.split('\n').length - 1;
      this.pendingText = '';
    }
    this.pre.appendChild(h('span', { class: cls }, text + '\n'));
  }
}

export interface LogOptions {
  container?: string;
  follow?: boolean;
  previous?: boolean;
  tailLines?: number;
  timestamps?: boolean;
  /** RFC 3339; the server reads it to the second. */
  sinceTime?: string;
}

export function logPath(ns: string, pod: string, o: LogOptions): string {
  const q = new URLSearchParams();
  if (o.container) q.set('container', o.container);
  if (o.follow) q.set('follow', 'true');
  if (o.previous) q.set('previous', 'true');
  if (o.timestamps) q.set('timestamps', 'true');
  if (o.sinceTime) q.set('sinceTime', o.sinceTime);
  else q.set('tailLines', String(o.tailLines ?? 1000));
  return `${objectPath(inNs(R.pods, ns), pod)}/log?${q}`;
}

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;

/**
 * Streams one pod's log into a pane until the signal aborts. A followed
 * log that breaks (the server went away) or ends while `resume()` still
 * says the pod runs is opened again from the time of the last line shown:
 * lines come with their timestamps, `sinceTime` asks from that second on,
 * and the lines of that second already shown are skipped, so nothing
 * appears twice.
 */
export async function streamInto(
  pane: LogPane, ns: string, pod: string, o: LogOptions, signal: AbortSignal, prefix = '',
  resume: () => boolean = () => true,
): Promise<void> {
  if (!o.follow) {
    try {
      await streamLines(logPath(ns, pod, o), (line) => pane.add(prefix + line), signal);
    } catch (e) {
      if ((e as Error).name === 'AbortError') return;
      pane.note(`${prefix}${e instanceof ApiError ? e.describe() : String(e)}`, 'error');
    }
    return;
  }
  // The newest timestamp shown, and how often each text was shown with it.
  let lastTs = '';
  let atLast = new Map<string, number>();
  let skipping = new Map<string, number>();
  const onLine = (raw: string) => {
    const sp = raw.indexOf(' ');
    const ts = sp > 0 && /^\d{4}-\d\d-\d\dT/.test(raw) ? raw.slice(0, sp) : '';
    const text = ts ? raw.slice(sp + 1) : raw;
    if (ts) {
      // Timestamps are fixed-width UTC, so they compare as strings.
      if (lastTs && ts < lastTs) return;
      if (ts === lastTs) {
        const n = skipping.get(text) ?? 0;
        if (n > 0) { skipping.set(text, n - 1); return; }
      } else {
        lastTs = ts;
        atLast = new Map();
        skipping = new Map();
      }
      atLast.set(text, (atLast.get(text) ?? 0) + 1);
    }
    pane.add(prefix + text);
  };
  let delay = RETRY_FIRST_MS;
  // Said once per outage: the server away, not a container that ended.
  let reconnecting = false;
  while (!signal.aborted) {
    const opts: LogOptions = { ...o, timestamps: true, sinceTime: lastTs || undefined };
    skipping = new Map(atLast);
    let failure: ApiError | null = null;
    try {
      await streamLines(logPath(ns, pod, opts), (line) => {
        if (reconnecting) { reconnecting = false; pane.note(`${prefix}(log stream resumed)`); }
        delay = RETRY_FIRST_MS;
        onLine(line);
      }, signal);
    } catch (e) {
      if ((e as Error).name === 'AbortError' || signal.aborted) return;
      failure = e instanceof ApiError ? e : new ApiError(0, String(e));
    }
    if (signal.aborted) return;
    // A refusal that no retry mends (gone, forbidden) ends it; so does a
    // stream that ended because the pod stopped.
    const fatal = failure && !failure.network && [401, 403, 404].includes(failure.status);
    if (fatal || !resume()) {
      if (failure) pane.note(`${prefix}${failure.describe()}`, 'error');
      else pane.note(`${prefix}(log stream ended)`);
      return;
    }
    if (failure && !reconnecting) {
      reconnecting = true;
      pane.note(`${prefix}(log stream interrupted; reconnecting…)`);
    }
    await new Promise<void>((r) => {
      const t = setTimeout(r, delay);
      signal.addEventListener('abort', () => { clearTimeout(t); r(); }, { once: true });
    });
    delay = Math.min(delay * 2, RETRY_MAX_MS);
  }
}

/** A child signal of the scope's, aborted on its own as well. */
export function childSignal(scope: Scope): AbortController {
  const c = new AbortController();
  scope.abort.signal.addEventListener('abort', () => c.abort(), { once: true });
  return c;
}
