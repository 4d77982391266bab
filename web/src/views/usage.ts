// What every pod uses and what every Service serves, as small live charts.
// Pods: CPU and memory from metrics.k8s.io PodMetrics when the server lists
// that API, else from each node's kubelet summary (CPU as the rate of its
// cumulative counter). Services: requests per second from
// custom.metrics.k8s.io, one value per Service (the sum over its pods).
// Metrics have no watch: they are sampled on an interval.

import { ApiError, KObj, R, call, groupVersions, collectionPath, inNs } from '../api';
import { h, s, fill, setText } from '../dom';
import { Table } from '../table';
import { currentNs, section } from '../ui';
import { fmtBytes, fmtCpu, fmtRate, keyOf, parseQuantity } from '../util';
import type { Scope } from '../watch';

/** The servers' windows are 5 s, refreshed each second: 2 s shows change without asking for the same value twice. */
const SAMPLE_MS = 2000;
/** Samples a chart keeps: two minutes. */
const KEPT = 60;
/** Services asked about per sample: custom metrics name them one at a time. */
const MAX_SERVICES = 50;
const METRICS_GV = 'metrics.k8s.io/v1beta1';
const CUSTOM_GV = 'custom.metrics.k8s.io/v1beta2';

interface Series { cpu: number[]; mem: number[] }
interface Sample { ns: string; name: string; cpu: number; mem: number }

function push(values: number[], v: number): void {
  values.push(v);
  if (values.length > KEPT) values.shift();
}

export function usage(scope: Scope, main: HTMLElement): void {
  const ns = currentNs();
  const source = h('p', { class: 'hint', role: 'status', id: 'usage-source' }, 'Sampling…');
  const svcSource = h('p', { class: 'hint', role: 'status', id: 'usage-services-source' }, 'Sampling…');
  const history = new Map<string, Series>();
  const rates = new Map<string, number[]>();
  const table = new Table('Pod usage', [
    { title: 'Pod', width: 'minmax(12rem, 2fr)', text: (o) => o.metadata.name },
    ...(ns ? [] : [{ title: 'Namespace', width: 'minmax(6rem, 1fr)', text: (o: KObj) => o.metadata.namespace ?? '' }]),
    { title: 'CPU (cores)', width: 'minmax(12rem, 2fr)', node: () => spark('cpu'), update: (el, o) => drawSpark(el, history.get(keyOf(o))?.cpu ?? [], fmtCpu) },
    { title: 'Memory', width: 'minmax(12rem, 2fr)', node: () => spark('mem'), update: (el, o) => drawSpark(el, history.get(keyOf(o))?.mem ?? [], fmtBytes) },
  ], keyOf, undefined, 'No pod is using anything yet.', 640);
  const svcTable = new Table('Service requests', [
    { title: 'Service', width: 'minmax(12rem, 2fr)', text: (o) => o.metadata.name },
    ...(ns ? [] : [{ title: 'Namespace', width: 'minmax(6rem, 1fr)', text: (o: KObj) => o.metadata.namespace ?? '' }]),
    { title: 'Requests per second', width: 'minmax(12rem, 2fr)', node: () => spark('rps'), update: (el, o) => drawSpark(el, rates.get(keyOf(o)) ?? [], fmtRate) },
    { title: 'In flight', width: '6rem', text: (o) => String(o.inFlight ?? '—') },
  ], keyOf, undefined, 'No Service to measure.', 560);
  const svcSection = section('Per Service', svcSource, svcTable.el);
  svcSection.hidden = true;
  fill(main, h('h1', null, 'Usage'), section('Per pod', source, table.el), svcSection);

  // Services come from their informer, so a new one gets a row at once.
  const services = scope.informer(inNs(R.services, ns));

  let previous = new Map<string, { nanos: number; at: number }>();
  let gv: Set<string> | null = null;
  const opts = { signal: scope.abort.signal };

  const fromMetricsApi = async (): Promise<Sample[]> => {
    const base = `/apis/${METRICS_GV}`;
    const list = await call('GET', ns ? `${base}/namespaces/${encodeURIComponent(ns)}/pods` : `${base}/pods`, undefined, opts);
    // Each container's usage is a quantity: CPU in nanocores ("123456n")
    // and memory in Ki ("2048Ki"), but any suffix reads right.
    return (list.items ?? []).map((m: any) => ({
      ns: m.metadata.namespace, name: m.metadata.name,
      cpu: (m.containers ?? []).reduce((t: number, c: any) => t + parseQuantity(c.usage?.cpu), 0),
      mem: (m.containers ?? []).reduce((t: number, c: any) => t + parseQuantity(c.usage?.memory), 0),
    }));
  };
  const fromSummaries = async (): Promise<Sample[]> => {
    const nodes = await call('GET', collectionPath(R.nodes), undefined, opts);
    const out: Sample[] = [];
    const now = new Map<string, { nanos: number; at: number }>();
    for (const n of nodes.items ?? []) {
      let sum: any;
      try {
        sum = await call('GET', `/api/v1/nodes/${encodeURIComponent(n.metadata.name)}/proxy/stats/summary`, undefined, opts);
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

  const samplePods = async () => {
    let samples: Sample[];
    let from: string;
    if (gv!.has(METRICS_GV)) {
      try {
        samples = await fromMetricsApi();
        from = 'metrics.k8s.io (PodMetrics)';
      } catch (e) {
        // The API is listed but does not answer (its backend down, or
        // RBAC): the nodes' own summaries may still.
        if (!(e instanceof ApiError) || e.network) throw e;
        try {
          samples = await fromSummaries();
          from = `the nodes' kubelet summaries (metrics.k8s.io: ${e.describe()})`;
        } catch {
          throw e;
        }
      }
    } else {
      samples = await fromSummaries();
      from = 'the nodes\' kubelet summaries';
    }
    setText(source, `Source: ${from}, every ${SAMPLE_MS / 1000} s. ${samples.length} pods.`);
    const seen = new Set<string>();
    for (const smp of samples) {
      const k = `${smp.ns}/${smp.name}`;
      seen.add(k);
      let series = history.get(k);
      if (!series) history.set(k, (series = { cpu: [], mem: [] }));
      push(series.cpu, smp.cpu);
      push(series.mem, smp.mem);
      table.upsert({ metadata: { name: smp.name, namespace: smp.ns } });
    }
    for (const k of [...history.keys()]) if (!seen.has(k)) { history.delete(k); table.remove(k); }
    table.refresh();
  };

  const metricValue = async (svc: KObj, metric: string): Promise<number | null> => {
    const path = `/apis/${CUSTOM_GV}/namespaces/${encodeURIComponent(svc.metadata.namespace ?? '')}/services/${encodeURIComponent(svc.metadata.name)}/${metric}`;
    try {
      const list = await call('GET', path, undefined, opts);
      // A MetricValueList; its value is a quantity, "1500m" for 1.5.
      const item = (list.items ?? [])[0];
      return item ? parseQuantity(item.value) : null;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null; // not measured yet
      throw e;
    }
  };

  const sampleServices = async () => {
    if (!gv!.has(CUSTOM_GV)) {
      svcSection.hidden = true;
      return;
    }
    svcSection.hidden = false;
    if (services.state !== 'ready') {
      if (services.state !== 'loading') setText(svcSource, services.error?.describe() ?? 'The Services cannot be listed.');
      return;
    }
    const all = [...services.items.values()].sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
    const asked = all.slice(0, MAX_SERVICES);
    const answers = await Promise.all(asked.map(async (svc) => {
      const [rps, inFlight] = await Promise.all([metricValue(svc, 'requests_per_second'), metricValue(svc, 'requests_in_flight')]);
      return { svc, rps, inFlight };
    }));
    const seen = new Set<string>();
    for (const { svc, rps, inFlight } of answers) {
      const k = keyOf(svc);
      seen.add(k);
      let series = rates.get(k);
      if (!series) rates.set(k, (series = []));
      if (rps !== null) push(series, rps);
      svcTable.upsert({ metadata: { name: svc.metadata.name, namespace: svc.metadata.namespace }, inFlight: inFlight === null ? '—' : Math.round(inFlight) });
    }
    for (const k of [...rates.keys()]) if (!seen.has(k)) { rates.delete(k); svcTable.remove(k); }
    svcTable.refresh();
    setText(svcSource, `Source: custom.metrics.k8s.io (requests_per_second over the last 5 s, the sum over each Service's pods), every ${SAMPLE_MS / 1000} s.`
      + (all.length > asked.length ? ` The first ${asked.length} of ${all.length} Services.` : ''));
  };

  let busy = false;
  const sample = async () => {
    // A slow server must not pile samples up.
    if (busy) return;
    busy = true;
    try {
      gv ??= await groupVersions();
      const [pods, svcs] = await Promise.allSettled([samplePods(), sampleServices()]);
      for (const [r, el] of [[pods, source], [svcs, svcSource]] as const) {
        if (r.status === 'fulfilled') continue;
        const e = r.reason;
        if ((e as Error).name === 'AbortError') return;
        setText(el, e instanceof ApiError ? (e.network ? 'Waiting for the server…' : e.describe()) : String(e));
      }
    } catch (e) {
      if ((e as Error).name === 'AbortError') return;
      setText(source, e instanceof ApiError ? (e.network ? 'Waiting for the server…' : e.describe()) : String(e));
    } finally {
      busy = false;
    }
  };
  void sample();
  scope.every(SAMPLE_MS, () => void sample());
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
  if (!values.length) {
    line.setAttribute('points', '');
    setText(value, '—');
    el.setAttribute('aria-label', 'not measured yet');
    el.setAttribute('role', 'img');
    return;
  }
  const max = Math.max(...values, 1e-9);
  const drawn = values.length === 1 ? [values[0], values[0]] : values;
  // Newest sample at the right edge; the chart fills in from there.
  const step = 120 / (KEPT - 1);
  const pts = drawn.map((v, i) => `${(120 - (drawn.length - 1 - i) * step).toFixed(1)},${(22 - (v / max) * 20).toFixed(1)}`).join(' ');
  line.setAttribute('points', pts);
  const last = values[values.length - 1];
  setText(value, fmt(last));
  el.setAttribute('aria-label', `${fmt(last)} now, peak ${fmt(max === 1e-9 ? 0 : max)}`);
  el.setAttribute('role', 'img');
}
