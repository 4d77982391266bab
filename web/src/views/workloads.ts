// Deployments (ready/desired, rollout, scale), DaemonSets, Jobs, CronJobs,
// and HorizontalPodAutoscalers when the server serves autoscaling/v2.

import { ApiError, KObj, R, Res, call, gate, groupVersions, inNs, objectPath } from '../api';
import { h, fill, setText } from '../dom';
import { IDLE_TEXT, hpaConditions, hpaMetrics, hpaRange, hpaScales, idleAtZero } from '../hpa';
import { Column, Table, feed } from '../table';
import { currentNs, notify, section, stateNote, workloadHref, yamlHref } from '../ui';
import { age, condition, keyOf } from '../util';
import type { Informer, Scope } from '../watch';

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

function block(scope: Scope, title: string, res: Res, kind: string | null, cols: Column[], allNs: boolean, first?: Column): { el: HTMLElement; table: Table } {
  const inf = scope.informer(res);
  first ??= kind
    ? { title: 'Name', width: 'minmax(10rem, 2fr)', ...nameLink(kind) }
    : { title: 'Name', width: 'minmax(10rem, 2fr)', text: (o) => o.metadata.name };
  const all = [first, ...(allNs ? [{ title: 'Namespace', width: 'minmax(6rem, 1fr)', text: (o: KObj) => o.metadata.namespace ?? '' }] : []), ...cols];
  const table = new Table(title, all, keyOf, undefined, `No ${title.toLowerCase()}.`, 560);
  scope.watch(inf, feed(table, inf.items));
  return { el: section(title, stateNote(scope, inf), table.el), table };
}

/** The autoscalers of one workload, from an HPA informer (null: none served). */
export function autoscalersOf(hpas: Informer | null, kind: string, w: KObj): KObj[] {
  if (!hpas) return [];
  return [...hpas.items.values()].filter((a) => hpaScales(a, kind, w.metadata.name, w.metadata.namespace));
}

/** A Deployment's autoscaling in a few words: "HPA web 1–5", or idle at zero. */
export function autoscaling(hpas: Informer | null, d: KObj): string {
  const mine = autoscalersOf(hpas, 'Deployment', d);
  if (!mine.length) return '—';
  const a = mine[0];
  return idleAtZero(d, a) ? IDLE_TEXT : `HPA ${a.metadata.name} ${hpaRange(a)}`;
}

export function workloads(scope: Scope, main: HTMLElement): void {
  const ns = currentNs();
  const allNs = !ns;
  const hpaSlot = h('div');
  let hpas: Informer | null = null;
  const deployments = block(scope, 'Deployments', inNs(R.deployments, ns), 'deployment', [
    { title: 'Ready', width: '5rem', text: ready },
    { title: 'Up to date', width: '6.5rem', text: (d) => String(d.status?.updatedReplicas ?? 0) },
    { title: 'Rollout', width: 'minmax(7rem, 1fr)', text: rollout, cls: (d) => `status ${rollout(d) === 'Complete' ? 'ok' : rollout(d) === 'Failed' ? 'bad' : 'warn'}` },
    { title: 'Autoscaling', width: 'minmax(8rem, 1.2fr)', text: (d) => autoscaling(hpas, d), cls: (d) => (autoscaling(hpas, d) === IDLE_TEXT ? 'status idle-zero' : '') },
    { title: 'Age', width: '4rem', text: (d) => age(d.metadata.creationTimestamp) },
    { title: 'Scale', width: '6rem', node: scaleButtons, update: (el, d) => { (el as any).obj = d; } },
  ], allNs);
  fill(main, h('h1', null, 'Workloads'),
    deployments.el,
    block(scope, 'DaemonSets', inNs(R.daemonsets, ns), 'daemonset', [
      { title: 'Desired', width: '5rem', text: (d) => String(d.status?.desiredNumberScheduled ?? 0) },
      { title: 'Current', width: '5rem', text: (d) => String(d.status?.currentNumberScheduled ?? 0) },
      { title: 'Ready', width: '5rem', text: (d) => String(d.status?.numberReady ?? 0) },
      { title: 'Age', width: '4rem', text: (d) => age(d.metadata.creationTimestamp) },
    ], allNs).el,
    block(scope, 'Jobs', inNs(R.jobs, ns), 'job', [
      { title: 'Completions', width: '7.5rem', text: (j) => `${j.status?.succeeded ?? 0}/${j.spec?.completions ?? 1}` },
      { title: 'Active', width: '4.5rem', text: (j) => String(j.status?.active ?? 0) },
      { title: 'Failed', width: '4.5rem', text: (j) => String(j.status?.failed ?? 0) },
      { title: 'Status', width: 'minmax(6rem, 1fr)', text: jobStatus, cls: (j) => `status ${jobStatus(j) === 'Complete' ? 'ok' : jobStatus(j) === 'Failed' ? 'bad' : 'warn'}` },
      { title: 'Age', width: '4rem', text: (j) => age(j.metadata.creationTimestamp) },
    ], allNs).el,
    block(scope, 'CronJobs', inNs(R.cronjobs, ns), null, [
      { title: 'Schedule', width: 'minmax(7rem, 1fr)', text: (c) => c.spec?.schedule ?? '' },
      { title: 'Suspend', width: '5.5rem', text: (c) => (c.spec?.suspend ? 'Yes' : 'No') },
      { title: 'Active', width: '4.5rem', text: (c) => String((c.status?.active ?? []).length) },
      { title: 'Last run', width: '5.5rem', text: (c) => age(c.status?.lastScheduleTime) },
    ], allNs).el,
    hpaSlot);
  // HorizontalPodAutoscalers exist only on servers that list them.
  groupVersions().then((gv) => {
    if (!gv.has('autoscaling/v2')) return;
    const hpaRes = inNs(R.hpas, ns);
    const b = block(scope, 'HorizontalPodAutoscalers', hpaRes, null, [
      {
        title: 'Reference', width: 'minmax(9rem, 1.2fr)',
        node: () => h('a'),
        update: (a, o) => {
          const ref = o.spec?.scaleTargetRef ?? {};
          const text = `${ref.kind ?? ''}/${ref.name ?? ''}`;
          if (ref.kind === 'Deployment') a.setAttribute('href', workloadHref('deployment', o.metadata.namespace ?? '', ref.name ?? ''));
          else a.removeAttribute('href');
          setText(a, text);
        },
      },
      { title: 'Targets (current/target)', width: 'minmax(12rem, 2fr)', text: hpaMetrics },
      { title: 'Min', width: '3.5rem', text: (a) => String(a.spec?.minReplicas ?? 1) },
      { title: 'Max', width: '3.5rem', text: (a) => String(a.spec?.maxReplicas ?? '') },
      { title: 'Replicas', width: '5.5rem', text: (a) => String(a.status?.currentReplicas ?? 0) + (a.status?.desiredReplicas !== undefined && a.status.desiredReplicas !== a.status.currentReplicas ? `→${a.status.desiredReplicas}` : '') },
      { title: 'Conditions', width: 'minmax(10rem, 1.5fr)', text: (a) => (idleAtZero(undefined, a) ? `${IDLE_TEXT}; ` : '') + hpaConditions(a) },
    ], allNs, {
      title: 'Name', width: 'minmax(8rem, 1.2fr)',
      node: (o) => h('a', { href: yamlHref(objectPath(inNs(R.hpas, o.metadata.namespace ?? ''), o.metadata.name)) }),
      update: (a, o) => setText(a, o.metadata.name),
    });
    fill(hpaSlot, b.el);
    // The Deployments' Autoscaling column follows the autoscalers.
    hpas = scope.informer(hpaRes);
    scope.watch(hpas, () => deployments.table.refresh());
  }, (e) => { if (!(e instanceof ApiError && e.network)) notify(e); });
}

export function jobStatus(j: KObj): string {
  if (condition(j, 'Complete')?.status === 'True') return 'Complete';
  if (condition(j, 'Failed')?.status === 'True') return 'Failed';
  if (j.spec?.suspend) return 'Suspended';
  return 'Running';
}
