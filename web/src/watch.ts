// Lists and watches: one informer per collection (and selector), shared by
// the views that show it. A list gives the objects and a resourceVersion,
// then a watch (`?watch=1&resourceVersion=RV`, JSON lines over fetch)
// streams every change from there. When the server goes away the watch is
// resumed from the last resourceVersion seen once it answers again, and a
// 410 Gone (history compacted) relists. Nothing polls.

import { ApiError, KObj, Res, can, collectionPath, connection, errorOf, headers } from './api';
import { keyOf } from './util';

export type Change =
  | { type: 'ADDED' | 'MODIFIED' | 'DELETED'; obj: KObj; old?: KObj }
  /** All objects replaced (first list, or a relist after 410). */
  | { type: 'SYNC' }
  /** Loading, ready, or refused (state and error on the informer). */
  | { type: 'STATE' };

export type InformerState = 'loading' | 'ready' | 'forbidden' | 'error';

/** Main-thread time of the last watch events, for the benchmark. */
export const eventTimes: number[] = [];
const EVENT_TIMES_KEPT = 2000;

export interface Selector {
  labelSelector?: string;
  fieldSelector?: string;
}

export class Informer {
  readonly items = new Map<string, KObj>();
  state: InformerState = 'loading';
  error: ApiError | null = null;
  private rv = '';
  private listeners = new Set<(c: Change) => void>();
  private abort = new AbortController();
  private stopped = false;
  refs = 0;

  constructor(readonly res: Res, readonly sel: Selector = {}) {}

  get path(): string { return collectionPath(this.res); }

  listen(f: (c: Change) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  private emit(c: Change): void {
    for (const l of this.listeners) l(c);
  }

  private setState(state: InformerState, error: ApiError | null = null): void {
    if (this.state === state && this.error === error) return;
    this.state = state;
    this.error = error;
    this.emit({ type: 'STATE' });
  }

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
    this.listeners.clear();
  }

  private query(extra: Record<string, string>): string {
    const q = new URLSearchParams();
    if (this.sel.labelSelector) q.set('labelSelector', this.sel.labelSelector);
    if (this.sel.fieldSelector) q.set('fieldSelector', this.sel.fieldSelector);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    return `${this.path}?${q}`;
  }

  private async run(): Promise<void> {
    // Ask first, so a list the user may not read is shown as refused
    // without a failed request.
    try {
      const allowed = await can({ verb: 'list', group: this.res.group, resource: this.res.resource, namespace: this.res.ns ?? '' });
      if (!allowed) {
        const where = this.res.ns ? `in namespace "${this.res.ns}"` : this.res.ns === undefined ? '' : 'across all namespaces';
        this.setState('forbidden', new ApiError(403, `your token may not list ${this.res.resource} ${where}`.trim(), 'Forbidden'));
        return;
      }
    } catch {
      // The review itself failed (server away): the list below retries.
    }
    let delay = 250;
    while (!this.stopped) {
      try {
        if (!this.rv) await this.list();
        await this.watch();
        delay = 250;
      } catch (e) {
        if (this.stopped || (e as Error).name === 'AbortError') return;
        const err = e instanceof ApiError ? e : new ApiError(0, String(e));
        if (err.status === 410) {
          this.rv = '';
          continue;
        }
        if (err.status === 401 || err.status === 403 || err.status === 404) {
          this.setState(err.status === 403 ? 'forbidden' : 'error', err);
          return;
        }
        if (err.network) connection.lost();
        this.setState('error', err);
        await sleep(delay, this.abort.signal);
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  private async fetch(url: string): Promise<Response> {
    let resp: Response;
    try {
      resp = await fetch(url, { headers: headers(), signal: this.abort.signal, cache: 'no-store' });
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw e;
      throw new ApiError(0, 'The server cannot be reached.');
    }
    if (!resp.ok) throw await errorOf(resp);
    connection.ok();
    return resp;
  }

  private async list(): Promise<void> {
    const resp = await this.fetch(this.query({}));
    const list = await resp.json();
    this.items.clear();
    for (const o of list.items ?? []) this.items.set(keyOf(o), o);
    this.rv = list.metadata?.resourceVersion ?? '';
    this.state = 'ready';
    this.error = null;
    this.emit({ type: 'SYNC' });
  }

  private async watch(): Promise<void> {
    const resp = await this.fetch(this.query({ watch: '1', resourceVersion: this.rv, allowWatchBookmarks: 'true' }));
    this.setState('ready');
    const reader = resp.body!.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        if ((e as Error).name === 'AbortError' || this.stopped) throw e;
        throw new ApiError(0, 'The server cannot be reached.');
      }
      if (chunk.done) return;
      buf += dec.decode(chunk.value, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim()) this.apply(line);
      }
    }
  }

  private apply(line: string): void {
    const t0 = performance.now();
    const ev = JSON.parse(line);
    const obj: KObj = ev.object;
    if (ev.type === 'ERROR') {
      const code = obj?.code ?? (obj as any)?.status;
      throw new ApiError(typeof code === 'number' ? code : 500, (obj as any)?.message ?? 'watch error', (obj as any)?.reason);
    }
    if (obj?.metadata?.resourceVersion) this.rv = obj.metadata.resourceVersion;
    if (ev.type === 'BOOKMARK') return;
    const key = keyOf(obj);
    const old = this.items.get(key);
    if (ev.type === 'DELETED') this.items.delete(key);
    else this.items.set(key, obj);
    this.emit({ type: ev.type, obj, old });
    eventTimes.push(performance.now() - t0);
    if (eventTimes.length > EVENT_TIMES_KEPT) eventTimes.splice(0, eventTimes.length - EVENT_TIMES_KEPT);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// --- Shared informers, counted by the views that hold them.

const shared = new Map<string, Informer>();

function informerKey(res: Res, sel: Selector): string {
  return `${collectionPath(res)}?${sel.labelSelector ?? ''}&${sel.fieldSelector ?? ''}`;
}

/**
 * What a view holds while it is on screen: informers, listeners, timers
 * and requests, all released when it goes.
 */
export class Scope {
  private disposers: (() => void)[] = [];
  readonly abort = new AbortController();

  informer(res: Res, sel: Selector = {}): Informer {
    const key = informerKey(res, sel);
    let inf = shared.get(key);
    if (!inf) {
      inf = new Informer(res, sel);
      shared.set(key, inf);
      inf.start();
    }
    inf.refs++;
    const held = inf;
    this.disposers.push(() => {
      held.refs--;
      if (held.refs === 0) {
        // Kept a moment: the next view often wants the same list.
        setTimeout(() => {
          if (held.refs === 0 && shared.get(key) === held) {
            shared.delete(key);
            held.stop();
          }
        }, 5000);
      }
    });
    return inf;
  }

  /** Calls f for every change, and once now with SYNC if already listed. */
  watch(inf: Informer, f: (c: Change) => void): void {
    this.disposers.push(inf.listen(f));
    if (inf.state !== 'loading') f({ type: 'SYNC' });
    if (inf.state === 'forbidden' || inf.state === 'error') f({ type: 'STATE' });
  }

  every(ms: number, f: () => void): void {
    const t = setInterval(f, ms);
    this.disposers.push(() => clearInterval(t));
  }

  add(f: () => void): void {
    this.disposers.push(f);
  }

  dispose(): void {
    this.abort.abort();
    for (const d of this.disposers.splice(0)) d();
  }
}
