// One workload (Deployment, DaemonSet or Job): its state, scaling, its pods
// live, the logs of all its pods together, and deletion.

import { KObj, R, Res, call, can, gate, groupVersions, inNs, objectPath } from '../api';
import { h, fill, field, setText } from '../dom';
import { IDLE_TEXT, conditionHealthy, hpaMetricList, hpaRange, hpaTargets, idleAtZero } from '../hpa';
import { LogPane, childSignal, streamInto } from '../logs';
import { Table, feed } from '../table';
import { badge, confirmDialog, notify, section, stateNote, yamlHref } from '../ui';
import { age, keyOf, matches, selectorString } from '../util';
import type { Informer, Scope } from '../watch';
import { podColumns } from './pods';
import { autoscalersOf, jobStatus, ready, rollout, scaleTo } from './workloads';

const KINDS: Record<string, { res: Res; title: string }> = {
  deployments: { res: R.deployments, title: 'Deployment' },
  daemonsets: { res: R.daemonsets, title: 'DaemonSet' },
  jobs: { res: R.jobs, title: 'Job' },
};

/** Pods whose logs are combined at most. */
const MAX_COMBINED = 20;

export function workloadPage(scope: Scope, main: HTMLElement, plural: string, args: string[]): void {
  const [ns, name] = args;
  const kind = KINDS[plural];
  const res = inNs(kind.res, ns);
  const path = objectPath(res, name);
  const inf = scope.informer(res, { fieldSelector: `metadata.name=${name}` });
  const facts = h('dl', { class: 'facts' });
  const conds = h('ul', { class: 'conditions' });
  const gone = h('p', { class: 'state error', role: 'status', hidden: true }, `This ${kind.title} no longer exists.`);

  // Scaling (Deployments): a number field and −/+.
  const scaleBox = h('div', { class: 'toolbar' });
  let current: KObj | undefined;
  if (plural === 'deployments') {
    const input = h('input', { type: 'number', id: 'replicas', min: 0, max: 1000, value: 1, inputmode: 'numeric' });
    const apply = h('button', { type: 'button', 'data-action': 'scale' }, 'Scale');
    const access = { verb: 'patch', group: 'apps', resource: 'deployments', subresource: 'scale', namespace: ns };
    gate(input, access, `scale deployments in ${ns}`);
    gate(apply, access, `scale deployments in ${ns}`);
    input.addEventListener('input', () => { input.dataset.dirty = 'true'; });
    const submit = () => {
      const n = parseInt(input.value, 10);
      if (!current || !Number.isFinite(n) || n < 0) return;
      delete input.dataset.dirty;
      scaleTo(current, n).then(() => notify(`Scaling ${name} to ${n}.`, 'info'), () => {});
    };
    apply.addEventListener('click', submit);
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter') submit(); });
    fill(scaleBox, h('label', { for: 'replicas' }, 'Replicas'), input, apply);
    (scaleBox as any).input = input;
  }

  const del = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, 'Delete');
  gate(del, { verb: 'delete', group: kind.res.group, resource: kind.res.resource, namespace: ns, name }, `delete ${kind.res.resource} in ${ns}`);
  del.addEventListener('click', () => void remove());

  const podsSlot = h('div');
  const logsSlot = h('div');
  // Autoscaling (Deployments, when the server serves autoscaling/v2): the
  // HorizontalPodAutoscalers whose scaleTargetRef is this workload.
  const autoBody = h('div', { id: 'autoscaling' });
  const autoSection = section('Autoscaling', autoBody);
  autoSection.hidden = true;
  let hpas: Informer | null = null;
  fill(main,
    h('h1', null, h('span', { class: 'muted' }, `${kind.title} `), name),
    h('div', { class: 'toolbar' }, h('a', { class: 'button', href: yamlHref(path) }, 'YAML'), del),
    stateNote(scope, inf), gone,
    section('Status', facts, conds, scaleBox),
    autoSection,
    podsSlot, logsSlot);

  const renderAutoscaling = () => {
    const mine = current ? autoscalersOf(hpas, kind.title, current) : [];
    autoSection.hidden = mine.length === 0;
    fill(autoBody, mine.map((a) => {
      const st = a.status ?? {};
      const idle = idleAtZero(current, a);
      return h('div', { class: 'hpa', 'data-hpa': a.metadata.name },
        h('p', null,
          'Autoscaled by HorizontalPodAutoscaler ',
          h('a', { href: yamlHref(objectPath(inNs(R.hpas, ns), a.metadata.name)) }, a.metadata.name),
          `, ${hpaRange(a)} replicas, target ${hpaTargets(a)}.`,
          idle ? [' ', badge(`Scaled to zero: ${IDLE_TEXT}`, 'idle')] : null),
        h('dl', { class: 'facts' },
          field('Replicas', `${st.currentReplicas ?? 0} now, ${st.desiredReplicas ?? 0} desired`),
          hpaMetricList(a).map((m) => field(m.label, `${m.current} / ${m.target}`)),
          field('Last scaled', st.lastScaleTime ? `${age(st.lastScaleTime)} ago` : 'never')),
        h('ul', { class: 'conditions' }, (st.conditions ?? []).map((c: any) =>
          h('li', null, badge(`${c.type}: ${c.status}`, conditionHealthy(c) ? 'ok' : 'warn'), ' ', c.reason ? `${c.reason}: ` : '', c.message ?? ''))));
    }));
    const input = (scaleBox as any).input as HTMLInputElement | undefined;
    if (input) {
      const hint = mine.length ? `The autoscaler ${mine[0].metadata.name} sets the replicas; a scale by hand lasts until it next acts.` : '';
      input.title = hint;
    }
  };
  if (plural === 'deployments') {
    groupVersions().then((gv) => {
      if (!gv.has('autoscaling/v2')) return;
      hpas = scope.informer(inNs(R.hpas, ns));
      scope.watch(hpas, renderAutoscaling);
    }, () => { /* no discovery: no autoscaling section */ });
  }

  let podsInf: Informer | null = null;
  const render = (o: KObj | undefined) => {
    current = o;
    gone.hidden = !(inf.state === 'ready' && !o);
    if (!o) return;
    const st = o.status ?? {};
    const rows = plural === 'deployments'
      ? [field('Ready', ready(o)), field('Up to date', String(st.updatedReplicas ?? 0)), field('Available', String(st.availableReplicas ?? 0)),
        field('Rollout', badge(rollout(o), rollout(o) === 'Complete' ? 'ok' : rollout(o) === 'Failed' ? 'bad' : 'warn'))]
      : plural === 'daemonsets'
        ? [field('Desired', String(st.desiredNumberScheduled ?? 0)), field('Ready', String(st.numberReady ?? 0))]
        : [field('Completions', `${st.succeeded ?? 0}/${o.spec?.completions ?? 1}`), field('Status', badge(jobStatus(o), jobStatus(o) === 'Failed' ? 'bad' : 'ok'))];
    const module = (o.spec?.template?.spec?.containers ?? []).map((c: any) => c.image).join(', ');
    fill(facts, rows, field('Module', h('code', null, module)), field('Age', age(o.metadata.creationTimestamp)));
    fill(conds, (st.conditions ?? []).map((c: any) =>
      h('li', null, badge(`${c.type}: ${c.status}`, c.status === 'True' ? 'ok' : 'warn'), ' ', c.message ?? c.reason ?? '')));
    const input = (scaleBox as any).input as HTMLInputElement | undefined;
    if (input && !input.dataset.dirty && document.activeElement !== input) input.value = String(o.spec?.replicas ?? 1);
    if (!podsInf) startPods(o);
    if (hpas) renderAutoscaling();
  };

  const startPods = (o: KObj) => {
    const sel: Record<string, string> = o.spec?.selector?.matchLabels ?? {};
    if (!Object.keys(sel).length) return;
    podsInf = scope.informer(inNs(R.pods, ns), { labelSelector: selectorString(sel) });
    const table = new Table(`Pods of ${name}`, podColumns(false), keyOf, undefined, 'No pods yet.');
    const count = h('span', { class: 'count' });
    const feedTable = feed(table, podsInf.items, (p) => matches(sel, p.metadata.labels));
    const pi = podsInf;
    scope.watch(pi, (c) => { feedTable(c); setText(count, `(${table.size})`); });
    scope.every(10_000, () => table.refresh());
    fill(podsSlot, section('Pods', stateNote(scope, pi), h('p', { class: 'hint' }, 'Pods: ', count), table.el));
    combinedLogs(scope, logsSlot, ns, name, pi);
  };

  scope.watch(inf, (c) => {
    if (c.type === 'SYNC' || c.type === 'STATE') render(inf.items.get(`${ns}/${name}`));
    else render(c.type === 'DELETED' ? undefined : c.obj);
  });

  async function remove(): Promise<void> {
    // The Service of the same name goes too when `Deploy` made it.
    const svcPath = objectPath(inNs(R.services, ns), name);
    let svc: KObj | null = null;
    try {
      if (await can({ verb: 'get', resource: 'services', namespace: ns, name })) svc = await call('GET', svcPath);
    } catch { /* no such Service */ }
    const alsoSvc = svc && svc.metadata.labels?.app === name;
    const q = `Delete ${kind.title} ${name} in ${ns} and its pods${alsoSvc ? `, and Service ${name}` : ''}?`;
    if (!(await confirmDialog(q, 'Delete'))) return;
    try {
      await call('DELETE', path, { apiVersion: 'v1', kind: 'DeleteOptions', propagationPolicy: 'Background' });
      if (alsoSvc) await call('DELETE', svcPath);
      notify(`${kind.title} ${name} deleted.`, 'info');
      location.hash = '#/workloads';
    } catch (e) {
      notify(e);
    }
  }
}

/** Logs of every pod of the workload, interleaved as they come, each line prefixed by its pod. */
function combinedLogs(scope: Scope, slot: HTMLElement, ns: string, name: string, pods: Informer): void {
  const pane = new LogPane(`Logs of all pods of ${name}`);
  const follow = h('input', { type: 'checkbox', id: 'combined-follow', checked: true });
  const streams = new Map<string, AbortController>();
  let started = false;
  const startOne = (pod: string) => {
    if (streams.has(pod) || streams.size >= MAX_COMBINED) return;
    const ctl = childSignal(scope);
    streams.set(pod, ctl);
    void streamInto(pane, ns, pod, { follow: follow.checked, tailLines: 200 }, ctl.signal, `[${pod}] `, () => {
      const p = pods.items.get(`${ns}/${pod}`);
      return !!p && !p.metadata.deletionTimestamp && p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed';
    });
  };
  const restart = () => {
    for (const c of streams.values()) c.abort();
    streams.clear();
    pane.clear();
    for (const p of pods.items.values()) if (p.status?.phase === 'Running' || p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') startOne(p.metadata.name);
  };
  const open = h('button', { type: 'button', 'data-action': 'combined-logs' }, 'Show logs of all pods');
  const body = h('div', { hidden: true }, h('div', { class: 'toolbar' }, h('label', { class: 'check' }, follow, 'Follow')), pane.pre);
  open.addEventListener('click', () => {
    body.hidden = !body.hidden;
    open.textContent = body.hidden ? 'Show logs of all pods' : 'Hide logs of all pods';
    if (!body.hidden && !started) { started = true; restart(); }
  });
  follow.addEventListener('change', restart);
  fill(slot, section('Logs of all pods', open, body));
  scope.watch(pods, (c) => {
    if (!started) return;
    if (c.type === 'DELETED') {
      streams.get(c.obj.metadata.name)?.abort();
      streams.delete(c.obj.metadata.name);
    } else if ((c.type === 'ADDED' || c.type === 'MODIFIED') && c.obj.status?.phase === 'Running' && follow.checked) {
      startOne(c.obj.metadata.name);
    }
  });
}
