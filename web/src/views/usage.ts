// What every pod uses: CPU and memory as small live charts. From
// metrics.k8s.io PodMetrics when the server lists that API, else from each
// node's kubelet summary (CPU as the rate of its cumulative counter).
// Metrics have no watch: they are sampled every few seconds.

import { ApiError, KObj, R, call, groupVersions, collectionPath } from '../api';
import { h, s, fill, setText } from '../dom';
import { Table } from '../table';
import { currentNs, section } from '../ui';
import { fmtBytes, fmtCpu, parseBytes, parseCpu } from '../util';
import type { Scope } from '../watch';

const SAMPLE_MS = 5000;
const KEPT = 60;

interface Series { cpu: number[]; mem: number[] }
interface Sample { ns: string; name: string; cpu: number; mem: number }

export function usage(scope: Scope, main: HTMLElement): void {
  const ns = currentNs();
  const source = h('p', { class: 'hint', role: 'status' }, 'Sampling…');
  const history = new Map<string, Series>();
  const table = new Table('Pod usage', [
    { title: 'Pod', width: 'minmax(12rem, 2fr)', text: (o) => o.metadata.name },
    ...(ns ? [] : [{ title: 'Namespace', width: 'minmax(6rem, 1fr)', text: (o: KObj) => o.metadata.namespace ?? '' }]),
    { title: 'CPU', width: 'minmax(12rem, 2fr)', node: () => spark('cpu'), update: (el, o) => drawSpark(el, history.get(key(o))?.cpu ?? [], fmtCpu) },
    { title: 'Memory', width: 'minmax(12rem, 2fr)', node: () => spark('mem'), update: (el, o) => drawSpark(el, history.get(key(o))?.mem ?? [], fmtBytes) },
  ], key, undefined, 'No pod is using anything yet.', 640);
  fill(main, h('h1', null, 'Usage'), section('Per pod', source, table.el));

  let previous = new Map<string, { nanos: number; at: number }>();
  let useMetricsApi: boolean | null = null;

  const fromMetricsApi = async (): Promise<Sample[]> => {
    const path = ns ? `/apis/metrics.k8s.io/v1beta1/namespaces/${encodeURIComponent(ns)}/pods` : '/apis/metrics.k8s.io/v1beta1/pods';
    const list = await call('GET', path, undefined, { signal: scope.abort.signal });
    return (list.items ?? []).map((m: any) => ({
      ns: m.metadata.namespace, name: m.metadata.name,
      cpu: (m.containers ?? []).reduce((t: number, c: any) => t + parseCpu(c.usage?.cpu), 0),
      mem: (m.containers ?? []).reduce((t: number, c: any) => t + parseBytes(c.usage?.memory), 0),
    }));
  };
  const fromSummaries = async (): Promise<Sample[]> => {
    const nodes = await call('GET', collectionPath(R.nodes), undefined, { signal: scope.abort.signal });
    const out: Sample[] = [];
    const now = new Map<string, { nanos: number; at: number }>();
    for (const n of nodes.items ?? []) {
      let sum: any;
      try {
        sum = await call('GET', `/api/v1/nodes/${encodeURIComponent(n.metadata.name)}/proxy/stats/summary`, undefined, { signal: scope.abort.signal });
      } catch (e) {
        if (e instanceof ApiError && !e.network) continue; // a node not answering
        throw e;
      }
      for (const p of sum.pods ?? []) {
        const pns = p.podRef?.namespace;
        if (ns && pns !== ns) continue;
        const k = `${pns}/${p.podRef?.name}`;
        const nanos = (p.containers ?? []).reduce((t: number, c: any) => t + (c.cpu?.usageCoreNanoSeconds ?? 0), 0);
        const at = Date.parse(p.cpu?.time ?? p.containers?.[0]?.cpu?.time ?? '') || Date.now();
        now.set(k, { nanos, at });
        const before = previous.get(k);
        const cpu = before && at > before.at ? Math.max(0, (nanos - before.nanos) / 1e9 / ((at - before.at) / 1000)) : 0;
        const mem = (p.containers ?? []).reduce((t: number, c: any) => t + (c.memory?.workingSetBytes ?? 0), 0);
        out.push({ ns: pns, name: p.podRef?.name, cpu, mem });
      }
    }
    previous = now;
    return out;
  };

  const sample = async () => {
    try {
      if (useMetricsApi === null) {
        useMetricsApi = (await groupVersions()).has('metrics.k8s.io/v1beta1');
      }
      const samples = useMetricsApi ? await fromMetricsApi() : await fromSummaries();
      setText(source, `Source: ${useMetricsApi ? 'metrics.k8s.io (PodMetrics)' : 'the nodes\' kubelet summaries'}, every ${SAMPLE_MS / 1000} s. ${samples.length} pods.`);
      const seen = new Set<string>();
      for (const smp of samples) {
        const k = `${smp.ns}/${smp.name}`;
        seen.add(k);
        let series = history.get(k);
        if (!series) history.set(k, (series = { cpu: [], mem: [] }));
        series.cpu.push(smp.cpu);
        series.mem.push(smp.mem);
        if (series.cpu.length > KEPT) { series.cpu.shift(); series.mem.shift(); }
        table.upsert({ metadata: { name: smp.name, namespace: smp.ns } });
      }
      for (const k of [...history.keys()]) if (!seen.has(k)) { history.delete(k); table.remove(k); }
      table.refresh();
    } catch (e) {
      if ((e as Error).name === 'AbortError') return;
      setText(source, e instanceof ApiError ? (e.network ? 'Waiting for the server…' : e.describe()) : String(e));
    }
  };
  void sample();
  scope.every(SAMPLE_MS, () => void sample());
}

function key(o: KObj): string {
  return `${o.metadata.namespace}/${o.metadata.name}`;
}

function spark(cls: string): HTMLElement {
  const line = s('polyline', { class: `spark-line ${cls}`, points: '' });
  return h('span', { class: 'spark' },
    s('svg', { viewBox: '0 0 120 24', preserveAspectRatio: 'none', 'aria-hidden': 'true' }, line),
    h('span', { class: 'spark-value' }));
}

function drawSpark(el: HTMLElement, values: number[], fmt: (n: number) => string): void {
  const line = el.querySelector('polyline')!;
  const value = el.querySelector('.spark-value')!;
  const max = Math.max(...values, 1e-9);
  const drawn = values.length === 1 ? [values[0], values[0]] : values;
  // Newest sample at the right edge; the chart fills in from there.
  const step = 120 / (KEPT - 1);
  const pts = drawn.map((v, i) => `${(120 - (drawn.length - 1 - i) * step).toFixed(1)},${(22 - (v / max) * 20).toFixed(1)}`).join(' ');
  line.setAttribute('points', pts);
  const last = values.length ? values[values.length - 1] : 0;
  setText(value, fmt(last));
  el.setAttribute('aria-label', `${fmt(last)} now, peak ${fmt(max === 1e-9 ? 0 : max)}`);
  el.setAttribute('role', 'img');
}

