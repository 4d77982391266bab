// HorizontalPodAutoscalers (autoscaling/v2) as people read them: what each
// scales, its metrics as current/target, its bounds and conditions, and
// whether its target sleeps at zero until a request wakes it.

import type { KObj } from './api';
import { fmtBytes, fmtCpu, fmtNumber, fmtRate, parseQuantity } from './util';

/** The field of a MetricSpec / MetricStatus that holds its source, by type. */
const SOURCE: Record<string, string> = {
  Resource: 'resource', Pods: 'pods', Object: 'object', External: 'external', ContainerResource: 'containerResource',
};

function source(m: any): any {
  return m?.[SOURCE[m?.type] ?? ''] ?? {};
}

/** The metric's name: "cpu", "requests_per_second", … */
function metricName(m: any): string {
  const src = source(m);
  return src.name ?? src.metric?.name ?? m?.type ?? '?';
}

/** Identifies a metric across spec.metrics and status.currentMetrics. */
function metricKey(m: any): string {
  const src = source(m);
  const obj = src.describedObject ? `${src.describedObject.kind}/${src.describedObject.name}` : '';
  return `${m?.type}|${metricName(m)}|${src.container ?? ''}|${obj}`;
}

/** A target or current value: "45%", "250m" cores, "64 MiB", "1.5/s". */
function fmtValue(name: string, v: any): string {
  if (!v) return '?';
  if (v.averageUtilization !== undefined && v.averageUtilization !== null) return `${v.averageUtilization}%`;
  const q = v.averageValue ?? v.value;
  if (q === undefined || q === null) return '?';
  const n = parseQuantity(q);
  if (name === 'cpu') return fmtCpu(n);
  if (name === 'memory') return fmtBytes(n);
  if (/per_second|_rate$|rps/.test(name)) return fmtRate(n);
  return fmtNumber(n);
}

function label(m: any): string {
  const src = source(m);
  const name = metricName(m);
  if (m?.type === 'Object' && src.describedObject) return `${name} of ${src.describedObject.kind} ${src.describedObject.name}`;
  if (m?.type === 'ContainerResource') return `${name} of container ${src.container}`;
  if (m?.type === 'Pods') return `${name} per pod`;
  return name;
}

export interface HpaMetric { label: string; current: string; target: string }

/** Each metric of spec.metrics with its current value from status.currentMetrics. */
export function hpaMetricList(a: KObj): HpaMetric[] {
  const specs: any[] = a.spec?.metrics?.length
    ? a.spec.metrics
    // autoscaling/v2's default: 80% CPU.
    : [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 80 } } }];
  const current = new Map<string, any>();
  for (const c of a.status?.currentMetrics ?? []) current.set(metricKey(c), c);
  return specs.map((m) => {
    const name = metricName(m);
    const cur = current.get(metricKey(m));
    return {
      label: label(m),
      current: cur ? fmtValue(name, source(cur).current) : '<unknown>',
      target: fmtValue(name, source(m).target),
    };
  });
}

/** "requests_per_second per pod: 1.5/s/10/s, cpu: 12%/80%" */
export function hpaMetrics(a: KObj): string {
  return hpaMetricList(a).map((m) => `${m.label}: ${m.current}/${m.target}`).join(', ');
}

/** Only the targets: "requests_per_second per pod 10/s". */
export function hpaTargets(a: KObj): string {
  return hpaMetricList(a).map((m) => `${m.label} ${m.target}`).join(', ');
}

export function hpaMin(a: KObj): number {
  return a.spec?.minReplicas ?? 1;
}

export function hpaRange(a: KObj): string {
  return `${hpaMin(a)}–${a.spec?.maxReplicas ?? '?'}`;
}

/** "Deployment/hello" */
export function hpaRef(a: KObj): string {
  return `${a.spec?.scaleTargetRef?.kind ?? ''}/${a.spec?.scaleTargetRef?.name ?? ''}`;
}

export function hpaScales(a: KObj, kind: string, name: string, ns: string | undefined): boolean {
  const ref = a.spec?.scaleTargetRef ?? {};
  return ref.kind === kind && ref.name === name && a.metadata.namespace === ns;
}

/**
 * Whether a workload sleeps at zero: its autoscaler allows zero and it is
 * there, so the service proxy wakes it at the next request.
 */
export function idleAtZero(workload: KObj | undefined, a: KObj): boolean {
  if (hpaMin(a) !== 0) return false;
  if (workload) return (workload.spec?.replicas ?? 1) === 0;
  return (a.status?.currentReplicas ?? -1) === 0;
}

export const IDLE_TEXT = 'idle — wakes on first request';

/** Conditions as a short line: the healthy ones by name, others with their reason. */
export function hpaConditions(a: KObj): string {
  const healthy: Record<string, string> = { AbleToScale: 'True', ScalingActive: 'True', ScalingLimited: 'False' };
  return (a.status?.conditions ?? []).map((c: any) =>
    healthy[c.type] === c.status ? `${c.type}` : `${c.type}=${c.status}${c.reason ? ` (${c.reason})` : ''}`).join(', ');
}

/** Whether a condition is in its expected state. */
export function conditionHealthy(c: any): boolean {
  return c.type === 'ScalingLimited' ? c.status !== 'True' : c.status === 'True';
}
