// Kubernetes values as people read them: quantities, ages, pod status.

import type { KObj } from './api';

const SUFFIX: Record<string, number> = {
  n: 1e-9, u: 1e-6, 'µ': 1e-6, m: 1e-3, '': 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, Pi: 1024 ** 5, Ei: 1024 ** 6,
};

/**
 * A Kubernetes quantity as a plain number: "250m" -> 0.25,
 * "123456n" -> 0.000123456, "2048Ki" -> 2097152, "1e3" -> 1000, "1.5" -> 1.5.
 * Metrics APIs answer CPU in nanocores ("n") and memory in Ki, custom
 * metrics in thousandths ("1500m" = 1.5); anything unreadable is 0.
 */
export function parseQuantity(q: string | number | undefined | null): number {
  if (typeof q === 'number') return Number.isFinite(q) ? q : 0;
  if (!q) return 0;
  const m = /^([+-]?[0-9]*\.?[0-9]+)(?:([eE][+-]?[0-9]+)|(n|u|µ|m|k|K|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?)$/.exec(q.trim());
  if (!m) return 0;
  const v = parseFloat(m[1] + (m[2] ?? ''));
  return m[2] ? v : v * SUFFIX[m[3] ?? ''];
}

/** CPU in cores ("250m" -> 0.25, "2" -> 2, "1500000n" -> 0.0015). */
export function parseCpu(q: string | undefined): number {
  return parseQuantity(q);
}

/** Bytes ("64Mi" -> 67108864, "2048Ki" -> 2097152). */
export function parseBytes(q: string | undefined): number {
  return parseQuantity(q);
}

export function fmtBytes(b: number): string {
  if (b < 1024) return `${Math.round(b)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = b / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** Cores as kubectl top writes them: "0", "45µ", "120m", "1.25". */
export function fmtCpu(cores: number): string {
  if (!(cores > 0)) return '0';
  if (cores < 0.0005) return `${Math.max(1, Math.round(cores * 1e6))}µ`;
  if (cores < 1) return `${Math.round(cores * 1000)}m`;
  return cores.toFixed(2).replace(/\.?0+$/, '');
}

/** A plain number, short: 0, 0.25, 1.5, 12, 1.2k. */
export function fmtNumber(v: number): string {
  if (!Number.isFinite(v) || v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 10_000) return `${(v / 1000).toFixed(a >= 100_000 ? 0 : 1).replace(/\.0$/, '')}k`;
  if (a >= 100) return String(Math.round(v));
  if (a >= 10) return v.toFixed(1).replace(/\.0$/, '');
  return v.toFixed(2).replace(/\.?0+$/, '') || '0';
}

/** Requests per second: "0/s", "1.5/s", "120/s". */
export function fmtRate(perSecond: number): string {
  return `${fmtNumber(perSecond)}/s`;
}

/** "3s", "5m", "2h", "4d", as kubectl prints ages. */
export function age(ts: string | undefined, now = Date.now()): string {
  if (!ts) return '';
  const secs = Math.max(0, Math.floor((now - Date.parse(ts)) / 1000));
  if (secs < 120) return `${secs}s`;
  const mins = Math.floor(secs / 60);
  if (mins < 120) return `${mins}m`;
  const hours = Math.floor(mins / 60);
  if (hours < 48) return `${hours}h`;
  return `${Math.floor(hours / 24)}d`;
}

/** The STATUS column of `kubectl get pods`. */
export function podStatus(p: KObj): string {
  const st = p.status ?? {};
  if (p.metadata.deletionTimestamp) return 'Terminating';
  let reason: string = st.reason || st.phase || 'Pending';
  for (const c of st.initContainerStatuses ?? []) {
    const t = c.state?.terminated;
    if (t && t.exitCode === 0) continue;
    if (t) return `Init:${t.reason || 'Error'}`;
    if (c.state?.waiting?.reason && c.state.waiting.reason !== 'PodInitializing') return `Init:${c.state.waiting.reason}`;
    return 'Init';
  }
  for (const c of st.containerStatuses ?? []) {
    if (c.state?.waiting?.reason) reason = c.state.waiting.reason;
    else if (c.state?.terminated?.reason) reason = c.state.terminated.reason;
  }
  return reason;
}

export function podReady(p: KObj): string {
  const cs: any[] = p.status?.containerStatuses ?? [];
  const total = (p.spec?.containers ?? []).length;
  return `${cs.filter((c) => c.ready).length}/${total}`;
}

export function podRestarts(p: KObj): number {
  return (p.status?.containerStatuses ?? []).reduce((n: number, c: any) => n + (c.restartCount ?? 0), 0);
}

/** A coarse class for colouring a status. */
export function statusTone(status: string): 'ok' | 'warn' | 'bad' | 'idle' {
  if (status === 'Running' || status === 'Completed' || status === 'Succeeded' || status === 'True') return 'ok';
  if (/Error|BackOff|Failed|OOM|Invalid|Unknown|False/.test(status)) return 'bad';
  if (status === 'Pending' || status === 'Terminating' || status.startsWith('Init') || status === 'ContainerCreating') return 'warn';
  return 'idle';
}

/** What a pod asks of its node: the sum over its containers. */
export function podRequests(p: KObj): { cpu: number; mem: number } {
  let cpu = 0;
  let mem = 0;
  for (const c of p.spec?.containers ?? []) {
    cpu += parseCpu(c.resources?.requests?.cpu);
    mem += parseBytes(c.resources?.requests?.memory);
  }
  return { cpu, mem };
}

/** Whether a label selector's matchLabels all hold for these labels. */
export function matches(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  const l = labels ?? {};
  return Object.entries(selector).every(([k, v]) => l[k] === v);
}

export function selectorString(sel: Record<string, string>): string {
  return Object.entries(sel).map(([k, v]) => `${k}=${v}`).join(',');
}

export function keyOf(o: KObj): string {
  return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
}

export function condition(o: KObj, type: string): any | undefined {
  return (o.status?.conditions ?? []).find((c: any) => c.type === type);
}
