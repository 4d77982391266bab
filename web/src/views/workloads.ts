// Deployments (ready/desired, rollout, scale), DaemonSets, Jobs, CronJobs,
// and HorizontalPodAutoscalers when the server serves autoscaling/v2.

import { ApiError, KObj, R, Res, call, gate, groupVersions, inNs, objectPath } from '../api';
import { h, fill, setText } from '../dom';
import { Column, Table, feed } from '../table';
import { currentNs, notify, section, stateNote, workloadHref } from '../ui';
import { age, condition, keyOf } from '../util';
import type { Scope } from '../watch';

export function rollout(d: KObj): string {
  const st = d.status ?? {};
  if ((st.observedGeneration ?? 0) < (d.metadata.generation ?? 0)) return 'Pending';
  const progressing = condition(d, 'Progressing');
  if (progressing?.reason === 'ProgressDeadlineExceeded') return 'Failed';
  const want = d.spec?.replicas ?? 1;
  if ((st.updatedReplicas ?? 0) < want) return 'Rolling out';
  if ((st.replicas ?? 0) > want) return 'Scaling down';
  if ((st.availableReplicas ?? 0) < want) return 'Waiting for pods';
  return 'Complete';
}

export function ready(d: KObj): string {
  return `${d.status?.readyReplicas ?? 0}/${d.spec?.replicas ?? 1}`;
}

/** Sets spec.replicas through the scale subresource. */
export async function scaleTo(d: KObj, replicas: number): Promise<void> {
  const path = `${objectPath(inNs(R.deployments, d.metadata.namespace ?? ''), d.metadata.name)}/scale`;
  try {
    await call('PATCH', path, { spec: { replicas } }, { contentType: 'application/merge-patch+json' });
  } catch (e) {
    notify(e);
    throw e;
  }
}

/** The − and + buttons of a deployment, disabled unless RBAC allows. */
export function scaleButtons(d: KObj): HTMLElement {
  const name = d.metadata.name;
  const ns = d.metadata.namespace ?? '';
  const access = { verb: 'patch', group: 'apps', resource: 'deployments', subresource: 'scale', namespace: ns };
  const down = h('button', { type: 'button', class: 'small', 'aria-label': `Scale ${name} down`, 'data-action': 'scale-down' }, '−');
  const up = h('button', { type: 'button', class: 'small', 'aria-label': `Scale ${name} up`, 'data-action': 'scale-up' }, '+');
  gate(down, access, `scale deployments in ${ns}`);
  gate(up, access, `scale deployments in ${ns}`);
  const el = h('span', { class: 'scale' }, down, up);
  (el as any).obj = d;
  const by = (delta: number) => () => {
    const cur: KObj = (el as any).obj;
    const want = Math.max(0, (cur.spec?.replicas ?? 1) + delta);
    scaleTo(cur, want).catch(() => {});
  };
  down.addEventListener('click', by(-1));
  up.addEventListener('click', by(1));
  return el;
}

function nameLink(kind: string) {
  return {
    node: (o: KObj) => h('a', { href: workloadHref(kind, o.metadata.namespace ?? '', o.metadata.name) }),
    update: (a: HTMLElement, o: KObj) => setText(a, o.metadata.name),
  };
}

function block(scope: Scope, title: string, res: Res, kind: string | null, cols: Column[], allNs: boolean): HTMLElement {
  const inf = scope.informer(res);
  const first: Column = kind
    ? { title: 'Name', width: 'minmax(10rem, 2fr)', ...nameLink(kind) }
    : { title: 'Name', width: 'minmax(10rem, 2fr)', text: (o) => o.metadata.name };
  const all = [first, ...(allNs ? [{ title: 'Namespace', width: 'minmax(6rem, 1fr)', text: (o: KObj) => o.metadata.namespace ?? '' }] : []), ...cols];
  const table = new Table(title, all, keyOf, undefined, `No ${title.toLowerCase()}.`, 560);
  scope.watch(inf, feed(table, inf.items));
  return section(title, stateNote(scope, inf), table.el);
}

export function workloads(scope: Scope, main: HTMLElement): void {
  const ns = currentNs();
  const allNs = !ns;
  const hpaSlot = h('div');
  fill(main, h('h1', null, 'Workloads'),
    block(scope, 'Deployments', inNs(R.deployments, ns), 'deployment', [
      { title: 'Ready', width: '5rem', text: ready },
      { title: 'Up to date', width: '6.5rem', text: (d) => String(d.status?.updatedReplicas ?? 0) },
      { title: 'Rollout', width: 'minmax(7rem, 1fr)', text: rollout, cls: (d) => `status ${rollout(d) === 'Complete' ? 'ok' : rollout(d) === 'Failed' ? 'bad' : 'warn'}` },
      { title: 'Age', width: '4rem', text: (d) => age(d.metadata.creationTimestamp) },
      { title: 'Scale', width: '6rem', node: scaleButtons, update: (el, d) => { (el as any).obj = d; } },
    ], allNs),
    block(scope, 'DaemonSets', inNs(R.daemonsets, ns), 'daemonset', [
      { title: 'Desired', width: '5rem', text: (d) => String(d.status?.desiredNumberScheduled ?? 0) },
      { title: 'Current', width: '5rem', text: (d) => String(d.status?.currentNumberScheduled ?? 0) },
      { title: 'Ready', width: '5rem', text: (d) => String(d.status?.numberReady ?? 0) },
      { title: 'Age', width: '4rem', text: (d) => age(d.metadata.creationTimestamp) },
    ], allNs),
    block(scope, 'Jobs', inNs(R.jobs, ns), 'job', [
      { title: 'Completions', width: '7.5rem', text: (j) => `${j.status?.succeeded ?? 0}/${j.spec?.completions ?? 1}` },
      { title: 'Active', width: '4.5rem', text: (j) => String(j.status?.active ?? 0) },
      { title: 'Failed', width: '4.5rem', text: (j) => String(j.status?.failed ?? 0) },
      { title: 'Status', width: 'minmax(6rem, 1fr)', text: jobStatus, cls: (j) => `status ${jobStatus(j) === 'Complete' ? 'ok' : jobStatus(j) === 'Failed' ? 'bad' : 'warn'}` },
      { title: 'Age', width: '4rem', text: (j) => age(j.metadata.creationTimestamp) },
    ], allNs),
    block(scope, 'CronJobs', inNs(R.cronjobs, ns), null, [
      { title: 'Schedule', width: 'minmax(7rem, 1fr)', text: (c) => c.spec?.schedule ?? '' },
      { title: 'Suspend', width: '5.5rem', text: (c) => (c.spec?.suspend ? 'Yes' : 'No') },
      { title: 'Active', width: '4.5rem', text: (c) => String((c.status?.active ?? []).length) },
      { title: 'Last run', width: '5.5rem', text: (c) => age(c.status?.lastScheduleTime) },
    ], allNs),
    hpaSlot);
  // HorizontalPodAutoscalers exist only on servers that list them.
  groupVersions().then((gv) => {
    if (!gv.has('autoscaling/v2')) return;
    fill(hpaSlot, block(scope, 'HorizontalPodAutoscalers', inNs(R.hpas, ns), null, [
      { title: 'Target', width: 'minmax(8rem, 1fr)', text: (a) => `${a.spec?.scaleTargetRef?.kind ?? ''}/${a.spec?.scaleTargetRef?.name ?? ''}` },
      { title: 'Metrics (current/target)', width: 'minmax(10rem, 1.5fr)', text: hpaMetrics },
      { title: 'Min', width: '3rem', text: (a) => String(a.spec?.minReplicas ?? 1) },
      { title: 'Max', width: '3rem', text: (a) => String(a.spec?.maxReplicas ?? '') },
      { title: 'Replicas', width: '5rem', text: (a) => `${a.status?.currentReplicas ?? 0}→${a.status?.desiredReplicas ?? 0}` },
    ], allNs));
  }, (e) => { if (!(e instanceof ApiError && e.network)) notify(e); });
}

export function jobStatus(j: KObj): string {
  if (condition(j, 'Complete')?.status === 'True') return 'Complete';
  if (condition(j, 'Failed')?.status === 'True') return 'Failed';
  if (j.spec?.suspend) return 'Suspended';
  return 'Running';
}

function hpaMetrics(a: KObj): string {
  const specs: any[] = a.spec?.metrics ?? [];
  const current: any[] = a.status?.currentMetrics ?? [];
  return specs.map((m, i) => {
    const kind = m.type === 'Resource' ? m.resource?.name : m.type;
    const target = m.resource?.target ?? m.pods?.target ?? m.object?.target ?? m.external?.target ?? {};
    const cur = current[i]?.resource?.current ?? current[i]?.pods?.current ?? current[i]?.object?.current ?? current[i]?.external?.current ?? {};
    const fmt = (t: any) => t.averageUtilization !== undefined ? `${t.averageUtilization}%` : t.averageValue ?? t.value ?? '?';
    return `${kind}: ${cur && Object.keys(cur).length ? fmt(cur) : '<unknown>'}/${fmt(target)}`;
  }).join(', ');
}
