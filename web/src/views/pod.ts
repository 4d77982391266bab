// One pod: summary, conditions, containers, its events and its logs
// (followed, or the previous run of a container).

import { KObj, R, call, gate, inNs, objectPath } from '../api';
import { h, fill, field } from '../dom';
import { LogPane, childSignal, streamInto } from '../logs';
import { Table, feed } from '../table';
import { badge, confirmDialog, notify, section, stateNote, workloadHref, yamlHref } from '../ui';
import { age, podReady, podRestarts, podStatus, statusTone } from '../util';
import type { Scope } from '../watch';
import { eventColumns } from './events';

export function podPage(scope: Scope, main: HTMLElement, args: string[]): void {
  const [ns, name] = args;
  const res = inNs(R.pods, ns);
  const path = objectPath(res, name);
  const inf = scope.informer(res, { fieldSelector: `metadata.name=${name}` });
  const summary = h('dl', { class: 'facts' });
  const conditions = h('tbody');
  const containers = h('tbody');
  const del = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, 'Delete pod');
  gate(del, { verb: 'delete', resource: 'pods', namespace: ns, name }, `delete pods in ${ns}`);
  del.addEventListener('click', async () => {
    if (!(await confirmDialog(`Delete pod ${name} in ${ns}? Its controller, if any, makes a new one.`, 'Delete'))) return;
    try {
      await call('DELETE', path);
      notify(`Pod ${name} is being deleted.`, 'info');
    } catch (e) { notify(e); }
  });
  const gone = h('p', { class: 'state error', role: 'status', hidden: true }, 'This pod no longer exists.');

  // Logs: a container picker, follow and previous-run switches.
  const pane = new LogPane(`Logs of ${name}`);
  const picker = h('select', { id: 'log-container' });
  const follow = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const previous = h('input', { type: 'checkbox', id: 'log-previous' });
  let logCtl: AbortController | null = null;
  const openLogs = () => {
    logCtl?.abort();
    logCtl = childSignal(scope);
    pane.clear();
    follow.disabled = previous.checked;
    void streamInto(pane, ns, name, {
      container: picker.value || undefined,
      follow: follow.checked && !previous.checked,
      previous: previous.checked,
    }, logCtl.signal, '', () => {
      // Followed again while the pod may still write: it exists and is
      // not finished.
      const p = inf.items.get(`${ns}/${name}`);
      return !!p && !p.metadata.deletionTimestamp && p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed';
    });
  };
  picker.addEventListener('change', openLogs);
  follow.addEventListener('change', openLogs);
  previous.addEventListener('change', openLogs);

  const events = scope.informer(inNs(R.events, ns), { fieldSelector: `involvedObject.name=${name}` });
  const evTable = new Table(`Events of ${name}`, eventColumns(false), (e) => e.metadata.name,
    undefined, 'No events.', 560);
  scope.watch(events, feed(evTable, events.items));

  fill(main,
    h('h1', null, h('span', { class: 'muted' }, 'Pod '), name),
    h('div', { class: 'toolbar' }, h('a', { class: 'button', href: yamlHref(path) }, 'YAML'), del),
    stateNote(scope, inf), gone,
    section('Summary', summary),
    section('Conditions', h('table', { class: 'simple' },
      h('thead', null, h('tr', null, h('th', null, 'Type'), h('th', null, 'Status'), h('th', null, 'Reason'), h('th', null, 'Since'))),
      conditions)),
    section('Containers', h('table', { class: 'simple' },
      h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'Module'), h('th', null, 'State'), h('th', null, 'Ready'), h('th', null, 'Restarts'), h('th', null, 'Ports'))),
      containers)),
    section('Events', stateNote(scope, events), evTable.el),
    section('Logs',
      h('div', { class: 'toolbar' },
        h('label', { for: 'log-container' }, 'Container'), picker,
        h('label', { class: 'check' }, follow, 'Follow'),
        h('label', { class: 'check' }, previous, 'Previous run')),
      pane.pre));

  let logsStarted = false;
  const render = (p: KObj | undefined) => {
    gone.hidden = !(inf.state === 'ready' && !p);
    if (!p) return;
    const st = podStatus(p);
    const owner = (p.metadata.ownerReferences ?? []).find((o) => o.controller);
    fill(summary,
      field('Status', badge(st, statusTone(st))),
      field('Ready', podReady(p)),
      field('Restarts', String(podRestarts(p))),
      field('Node', p.spec?.nodeName ?? '—'),
      field('IP', p.status?.podIP ?? '—'),
      field('Age', age(p.metadata.creationTimestamp)),
      field('Controlled by', owner ? ownerLink(ns, owner, p) : '—'));
    fill(conditions, (p.status?.conditions ?? []).map((c: any) =>
      h('tr', null, h('td', null, c.type), h('td', null, badge(c.status, statusTone(c.status))), h('td', null, c.reason ?? ''), h('td', null, age(c.lastTransitionTime)))));
    const statuses = new Map<string, any>((p.status?.containerStatuses ?? []).map((c: any) => [c.name, c]));
    fill(containers, (p.spec?.containers ?? []).map((c: any) => {
      const s = statuses.get(c.name) ?? {};
      const state = s.state?.running ? 'Running' : s.state?.waiting ? `Waiting: ${s.state.waiting.reason ?? ''}` : s.state?.terminated ? `Terminated: ${s.state.terminated.reason ?? ''} (${s.state.terminated.exitCode})` : '—';
      return h('tr', null, h('td', null, c.name), h('td', null, h('code', null, c.image)), h('td', null, state),
        h('td', null, s.ready ? 'Yes' : 'No'), h('td', null, String(s.restartCount ?? 0)),
        h('td', null, (c.ports ?? []).map((pt: any) => `${pt.name ? pt.name + ':' : ''}${pt.containerPort}`).join(', ')));
    }));
    const names = (p.spec?.containers ?? []).map((c: any) => c.name as string);
    if (picker.options.length !== names.length) {
      fill(picker, names.map((n: string) => h('option', { value: n }, n)));
    }
    if (!logsStarted) {
      logsStarted = true;
      openLogs();
    }
  };
  scope.watch(inf, (c) => {
    if (c.type === 'SYNC' || c.type === 'STATE') render(inf.items.get(`${ns}/${name}`));
    else render(c.type === 'DELETED' ? undefined : c.obj);
  });
  scope.every(10_000, () => render(inf.items.get(`${ns}/${name}`)));
}

function ownerLink(ns: string, owner: { kind: string; name: string }, p: KObj): HTMLElement {
  // A ReplicaSet's pods belong to the Deployment whose name prefixes it
  // (pod-template-hash is the suffix).
  if (owner.kind === 'ReplicaSet') {
    const hash = p.metadata.labels?.['pod-template-hash'];
    if (hash && owner.name.endsWith(`-${hash}`)) {
      const dep = owner.name.slice(0, -hash.length - 1);
      return h('a', { href: workloadHref('deployment', ns, dep) }, `Deployment ${dep}`);
    }
  }
  const kinds: Record<string, string> = { DaemonSet: 'daemonset', Job: 'job', Deployment: 'deployment' };
  const k = kinds[owner.kind];
  return k ? h('a', { href: workloadHref(k, ns, owner.name) }, `${owner.kind} ${owner.name}`) : h('span', null, `${owner.kind} ${owner.name}`);
}
