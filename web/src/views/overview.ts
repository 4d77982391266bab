// Every node, Ready or not, with what its placed pods request against what
// it can give: CPU, memory and pod slots, drawn as bars.

import { KObj, R, inNs } from '../api';
import { h, s, fill, setText } from '../dom';
import { badge, currentNs, section, stateNote } from '../ui';
import { condition, fmtBytes, fmtCpu, parseBytes, parseCpu, podRequests } from '../util';
import type { Scope } from '../watch';

interface Load { cpu: number; mem: number; pods: number }
interface Placed { node: string; cpu: number; mem: number }

export function overview(scope: Scope, main: HTMLElement): void {
  const nodes = scope.informer(R.nodes);
  // Requests are counted over the whole cluster when the user may list
  // every pod; otherwise over the namespace in view, and the page says so.
  const allPods = scope.informer(R.pods);
  let pods = allPods;
  const note = h('p', { class: 'hint' });
  const grid = h('div', { class: 'cards', role: 'list', 'aria-label': 'Nodes' });
  fill(main, h('h1', null, 'Overview'), section('Nodes', stateNote(scope, nodes), note, grid));

  const load = new Map<string, Load>();
  const placed = new Map<string, Placed>();
  const cards = new Map<string, ReturnType<typeof card>>();

  const loadOf = (node: string): Load => {
    let l = load.get(node);
    if (!l) load.set(node, (l = { cpu: 0, mem: 0, pods: 0 }));
    return l;
  };
  const counts = (p: KObj) => Boolean(p.spec?.nodeName) && p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed';
  const account = (key: string, p: KObj | null): string[] => {
    const touched: string[] = [];
    const before = placed.get(key);
    if (before) {
      const l = loadOf(before.node);
      l.cpu -= before.cpu; l.mem -= before.mem; l.pods -= 1;
      placed.delete(key);
      touched.push(before.node);
    }
    if (p && counts(p)) {
      const r = podRequests(p);
      const now = { node: p.spec.nodeName, cpu: r.cpu, mem: r.mem };
      const l = loadOf(now.node);
      l.cpu += now.cpu; l.mem += now.mem; l.pods += 1;
      placed.set(key, now);
      if (!touched.includes(now.node)) touched.push(now.node);
    }
    return touched;
  };
  const redraw = (node: string) => {
    const c = cards.get(node);
    const n = nodes.items.get(node);
    if (c && n) c.update(n, loadOf(node));
  };

  const syncNodes = () => {
    for (const [name, c] of cards) if (!nodes.items.has(name)) { c.el.remove(); cards.delete(name); }
    for (const n of [...nodes.items.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))) {
      let c = cards.get(n.metadata.name);
      if (!c) { c = card(n); cards.set(n.metadata.name, c); }
      grid.appendChild(c.el);
      c.update(n, loadOf(n.metadata.name));
    }
    if (nodes.state === 'ready' && nodes.items.size === 0) fill(grid, h('p', { class: 'empty' }, 'No nodes have joined.'));
  };
  scope.watch(nodes, (c) => {
    if (c.type === 'SYNC') syncNodes();
    else if (c.type === 'ADDED' || c.type === 'DELETED') syncNodes();
    else if (c.type === 'MODIFIED') redraw(c.obj.metadata.name);
  });

  const podKey = (p: KObj) => `${p.metadata.namespace}/${p.metadata.name}`;
  const podChange = (c: { type: string; obj?: KObj }) => {
    if (c.type === 'STATE' && pods === allPods && allPods.state === 'forbidden' && currentNs()) {
      // Fall back to the namespace in view.
      pods = scope.informer(inNs(R.pods, currentNs()));
      setText(note, `Requests counted over namespace "${currentNs()}" only: your token may not list pods in every namespace.`);
      scope.watch(pods, podChange);
      return;
    }
    if (c.type === 'SYNC') {
      placed.clear(); load.clear();
      for (const p of pods.items.values()) account(podKey(p), p);
      for (const name of cards.keys()) redraw(name);
    } else if (c.obj) {
      for (const node of account(podKey(c.obj), c.type === 'DELETED' ? null : c.obj)) redraw(node);
    }
  };
  scope.watch(allPods, podChange);
}

function bar(label: string) {
  const fillRect = s('rect', { class: 'fill', x: 0, y: 0, height: 10, width: 0, rx: 2 });
  const svg = s('svg', { class: 'bar', viewBox: '0 0 100 10', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
    s('rect', { class: 'track', x: 0, y: 0, width: 100, height: 10, rx: 2 }), fillRect);
  const value = h('span', { class: 'value' });
  const el = h('div', { class: 'meter', role: 'meter', 'aria-label': label, 'aria-valuemin': 0, 'aria-valuemax': 100 },
    h('span', { class: 'label' }, label), svg, value);
  return {
    el,
    set(used: number, total: number, text: string) {
      const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
      fillRect.setAttribute('width', pct.toFixed(1));
      fillRect.setAttribute('class', `fill ${pct > 90 ? 'bad' : pct > 70 ? 'warn' : 'ok'}`);
      el.setAttribute('aria-valuenow', pct.toFixed(0));
      el.setAttribute('aria-valuetext', text);
      setText(value, text);
    },
  };
}

function card(n: KObj) {
  const name = n.metadata.name;
  const status = h('span');
  const cpu = bar('CPU requested');
  const mem = bar('Memory requested');
  const slots = bar('Pods');
  const addr = h('span', { class: 'muted' });
  const el = h('article', { class: 'card node', role: 'listitem', 'aria-label': `Node ${name}`, 'data-node': name },
    h('h3', null, name, ' ', status), addr, cpu.el, mem.el, slots.el);
  return {
    el,
    update(n: KObj, l: Load) {
      const ready = condition(n, 'Ready');
      const st = ready?.status === 'True' ? 'Ready' : ready?.status === 'Unknown' ? 'Unknown' : 'NotReady';
      const unsched = n.spec?.unschedulable ? ' (cordoned)' : '';
      fill(status, badge(st + unsched, st === 'Ready' ? 'ok' : 'bad'));
      const ip = (n.status?.addresses ?? []).find((a: any) => a.type === 'InternalIP')?.address ?? '';
      setText(addr, ip);
      const alloc = n.status?.allocatable ?? {};
      const aCpu = parseCpu(alloc.cpu);
      const aMem = parseBytes(alloc.memory);
      const aPods = parseInt(alloc.pods ?? '0', 10) || 0;
      cpu.set(l.cpu, aCpu, `${fmtCpu(l.cpu)} of ${fmtCpu(aCpu)} cores`);
      mem.set(l.mem, aMem, `${fmtBytes(l.mem)} of ${fmtBytes(aMem)}`);
      slots.set(l.pods, aPods, `${l.pods} of ${aPods}`);
    },
  };
}
