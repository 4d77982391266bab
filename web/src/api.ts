// Every call goes to the Kubernetes API with the user's bearer token, so
// RBAC applies exactly as it does to kubectl. The token lives in
// sessionStorage only: it goes when the tab closes.

export interface KObj {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { kind: string; name: string; controller?: boolean }[];
    generation?: number;
    [k: string]: any;
  };
  spec?: any;
  status?: any;
  [k: string]: any;
}

export interface Cause { field?: string; message?: string; reason?: string }

/** A failed call: the server's Status, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason = '',
    readonly causes: Cause[] = [],
  ) {
    super(message);
  }
  get network(): boolean { return this.status === 0; }
  get forbidden(): boolean { return this.status === 403; }
  /** How it reads to a person. */
  describe(): string {
    if (this.network) return 'The server cannot be reached.';
    if (this.status === 403) return `Forbidden: ${this.message}`;
    if (this.status === 401) return 'The server no longer accepts this token. Sign in again.';
    return this.message || `HTTP ${this.status}`;
  }
}

const TOKEN_KEY = 'wkube.token';

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t: string | null): void {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
  accessCache.clear();
  discovered = null;
}

/** Whether the server answers: one state for the whole page. */
type ConnListener = (online: boolean) => void;
const connListeners = new Set<ConnListener>();
let online = true;
export const connection = {
  get online() { return online; },
  lost(): void {
    if (!online) return;
    online = false;
    for (const l of connListeners) l(false);
  },
  ok(): void {
    if (online) return;
    online = true;
    for (const l of connListeners) l(true);
  },
  listen(l: ConnListener): () => void {
    connListeners.add(l);
    return () => connListeners.delete(l);
  },
};

let unauthorized: () => void = () => {};
/** Called when the server refuses the token (401). */
export function onUnauthorized(f: () => void): void { unauthorized = f; }

export function headers(extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** Turns a non-2xx answer into an ApiError, from its Status body if any. */
export async function errorOf(resp: Response): Promise<ApiError> {
  let body: any = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  if (resp.status === 401) unauthorized();
  return fromStatus(resp.status, body);
}

export function fromStatus(status: number, body: any): ApiError {
  const message = body?.message || `${status} ${body?.reason ?? ''}`.trim();
  return new ApiError(status, message, body?.reason ?? '', body?.details?.causes ?? []);
}

/** One request; the JSON answer, or an ApiError. */
export async function call<T = any>(
  method: string,
  path: string,
  body?: unknown,
  opts: { contentType?: string; signal?: AbortSignal } = {},
): Promise<T> {
  let resp: Response;
  try {
    resp = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { 'Content-Type': opts.contentType ?? 'application/json' }),
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      signal: opts.signal,
      cache: 'no-store',
    });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    connection.lost();
    throw new ApiError(0, 'The server cannot be reached.');
  }
  connection.ok();
  if (!resp.ok) throw await errorOf(resp);
  const text = await resp.text();
  return (text ? JSON.parse(text) : null) as T;
}

/** A resource collection: where it lives in the API. */
export interface Res {
  group: string;
  version: string;
  resource: string;
  /** Namespace; "" for all namespaces or a cluster-scoped kind. */
  ns?: string;
}

export function collectionPath(r: Res): string {
  const base = r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
  return r.ns ? `${base}/namespaces/${encodeURIComponent(r.ns)}/${r.resource}` : `${base}/${r.resource}`;
}

export function objectPath(r: Res, name: string): string {
  return `${collectionPath(r)}/${encodeURIComponent(name)}`;
}

export const R = {
  nodes: { group: '', version: 'v1', resource: 'nodes' },
  namespaces: { group: '', version: 'v1', resource: 'namespaces' },
  pods: { group: '', version: 'v1', resource: 'pods' },
  services: { group: '', version: 'v1', resource: 'services' },
  events: { group: '', version: 'v1', resource: 'events' },
  deployments: { group: 'apps', version: 'v1', resource: 'deployments' },
  daemonsets: { group: 'apps', version: 'v1', resource: 'daemonsets' },
  replicasets: { group: 'apps', version: 'v1', resource: 'replicasets' },
  jobs: { group: 'batch', version: 'v1', resource: 'jobs' },
  cronjobs: { group: 'batch', version: 'v1', resource: 'cronjobs' },
  hpas: { group: 'autoscaling', version: 'v2', resource: 'horizontalpodautoscalers' },
  endpointslices: { group: 'discovery.k8s.io', version: 'v1', resource: 'endpointslices' },
} satisfies Record<string, Res>;

export function inNs(r: Res, ns: string): Res {
  return { ...r, ns };
}

// --- What the user may do: SelfSubjectAccessReview, cached per question.

const accessCache = new Map<string, Promise<boolean>>();

export interface Access {
  verb: string;
  group?: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
}

/** Whether the server would allow this, as `kubectl auth can-i` asks. */
export function can(a: Access): Promise<boolean> {
  const key = JSON.stringify([a.verb, a.group ?? '', a.resource, a.subresource ?? '', a.namespace ?? '', a.name ?? '']);
  let p = accessCache.get(key);
  if (!p) {
    p = call('POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SelfSubjectAccessReview',
      spec: { resourceAttributes: { ...a, group: a.group ?? '' } },
    }).then(
      (r) => Boolean(r?.status?.allowed),
      (e) => {
        // Not an answer: ask again next time.
        accessCache.delete(key);
        throw e;
      },
    );
    accessCache.set(key, p);
  }
  return p;
}

/** Disables a control until (and unless) the user may use it. */
export function gate(el: HTMLButtonElement | HTMLInputElement | HTMLSelectElement, a: Access, what: string): void {
  el.disabled = true;
  can(a).then(
    (ok) => {
      el.disabled = !ok;
      if (!ok) {
        el.title = `Your token may not ${what}`;
        el.dataset.denied = 'true';
      }
    },
    () => { el.disabled = false; },
  );
}

// --- Discovery: which group versions the server serves.

let discovered: Promise<Set<string>> | null = null;

export function groupVersions(): Promise<Set<string>> {
  if (!discovered) {
    discovered = call('GET', '/apis').then(
      (d) => {
        const out = new Set<string>(['v1']);
        for (const g of d?.groups ?? []) for (const v of g.versions ?? []) out.add(v.groupVersion);
        return out;
      },
      (e) => { discovered = null; throw e; },
    );
  }
  return discovered;
}

/** Who the token belongs to (SelfSubjectReview). */
export async function whoami(): Promise<{ username: string; groups: string[] }> {
  const r = await call('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'SelfSubjectReview',
  });
  return { username: r?.status?.userInfo?.username ?? '?', groups: r?.status?.userInfo?.groups ?? [] };
}

/**
 * Reads a streaming text answer (logs) line by line until it ends or the
 * signal aborts it. Resolves when the stream ends.
 */
export async function streamLines(path: string, onLine: (line: string) => void, signal: AbortSignal): Promise<void> {
  let resp: Response;
  try {
    resp = await fetch(path, { headers: headers({ Accept: '*/*' }), signal, cache: 'no-store' });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    connection.lost();
    throw new ApiError(0, 'The server cannot be reached.');
  }
  if (!resp.ok) throw await errorOf(resp);
  connection.ok();
  const reader = resp.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  }
  if (buf) onLine(buf);
}
