// A map of one namespace: Services, the pods they select, the nodes those
// pods run on, drawn as three columns joined by lines (SVG).

import { KObj, R, inNs } from '../api';
import { h, s, fill } from '../dom';
import { currentNs, section, stateNote } from '../ui';
import { matches, podStatus, statusTone } from '../util';
import type { Scope } from '../watch';

const COL_X = [20, 300, 580];
const BOX_W = 220;
const BOX_H = 34;
const GAP = 14;
const MAX_PODS = 150;

export function graph(scope: Scope, main: HTMLElement): void {
  const ns = currentNs();
  const holder = h('div', { class: 'map' });
  const desc = h('ul', { class: 'visually-hidden', id: 'map-desc' });
  const more = h('p', { class: 'hint' });
  if (!ns) {
    fill(main, h('h1', null, 'Map'), h('p', { class: 'state' }, 'Pick a namespace to draw its map.'));
    return;
  }
  const svcs = scope.informer(inNs(R.services, ns));
  const pods = scope.informer(inNs(R.pods, ns));
  const nodes = scope.informer(R.nodes);
  fill(main, h('h1', null, `Map of ${ns}`), section('Services → pods → nodes', stateNote(scope, svcs), stateNote(scope, pods), more, holder, desc));
  let scheduled = false;
  const draw = () => {
    scheduled = false;
    const services = [...svcs.items.values()].filter((x) => x.spec?.selector).sort(byName);
    const allPods = [...pods.items.values()].sort(byName);
    // A map of thousands of boxes helps no one: the first ones, and a count.
    const podList = allPods.slice(0, MAX_PODS);
    fill(more, allPods.length > MAX_PODS ? `Showing ${MAX_PODS} of ${allPods.length} pods.` : '');
    const nodeNames = new Set<string>(podList.map((p) => p.spec?.nodeName).filter(Boolean));
    for (const n of nodes.items.values()) nodeNames.add(n.metadata.name);
    const nodeList = [...nodeNames].sort();
    const y = (i: number) => 20 + i * (BOX_H + GAP);
    const podY = new Map(podList.map((p, i) => [p.metadata.name, y(i)]));
    const nodeY = new Map(nodeList.map((n, i) => [n, y(i)]));
    const rows = Math.max(services.length, podList.length, nodeList.length, 1);
    const height = y(rows) + 10;
    const edges: SVGElement[] = [];
    const lines: HTMLElement[] = [];
    const curve = (x1: number, y1: number, x2: number, y2: number, cls: string) =>
      s('path', { class: `edge ${cls}`, d: `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}` });
    services.forEach((svc, i) => {
      const selected = podList.filter((p) => matches(svc.spec.selector, p.metadata.labels));
      for (const p of selected) edges.push(curve(COL_X[0] + BOX_W, y(i) + BOX_H / 2, COL_X[1], podY.get(p.metadata.name)! + BOX_H / 2, 'svc'));
      lines.push(h('li', null, `Service ${svc.metadata.name} → ${selected.map((p) => p.metadata.name).join(', ') || 'no pods'}`));
    });
    for (const p of podList) {
      const node = p.spec?.nodeName;
      if (node && nodeY.has(node)) edges.push(curve(COL_X[1] + BOX_W, podY.get(p.metadata.name)! + BOX_H / 2, COL_X[2], nodeY.get(node)! + BOX_H / 2, 'node'));
      lines.push(h('li', null, `Pod ${p.metadata.name} (${podStatus(p)}) on ${node || 'no node yet'}`));
    }
    const box = (x: number, yy: number, label: string, cls: string, href?: string) => {
      const g = s('g', { class: `box ${cls}` },
        s('rect', { x, y: yy, width: BOX_W, height: BOX_H, rx: 6 }),
        s('text', { x: x + 10, y: yy + BOX_H / 2 + 5 }, label.length > 28 ? label.slice(0, 27) + '…' : label));
      if (!href) return g;
      return s('a', { href }, g);
    };
    const svg = s('svg', { viewBox: `0 0 ${COL_X[2] + BOX_W + 20} ${height + 20}`, role: 'img', 'aria-labelledby': 'map-title', 'aria-describedby': 'map-desc' },
      s('title', { id: 'map-title' }, `Services, pods and nodes of namespace ${ns}`),
      s('text', { class: 'col', x: COL_X[0], y: 12 }, 'Services'),
      s('text', { class: 'col', x: COL_X[1], y: 12 }, 'Pods'),
      s('text', { class: 'col', x: COL_X[2], y: 12 }, 'Nodes'),
      s('g', { transform: 'translate(0,10)' },
        edges,
        services.map((svc, i) => box(COL_X[0], y(i), svc.metadata.name, 'svc')),
        podList.map((p) => box(COL_X[1], podY.get(p.metadata.name)!, p.metadata.name, `pod ${statusTone(podStatus(p))}`,
          `#/pod/${encodeURIComponent(ns)}/${encodeURIComponent(p.metadata.name)}`)),
        nodeList.map((n) => box(COL_X[2], nodeY.get(n)!, n, nodes.items.has(n) ? 'node' : 'node missing'))));
    fill(holder, svg);
    fill(desc, lines);
  };
  // One drawing per frame however many events arrive in it.
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(draw);
  };
  scope.watch(svcs, schedule);
  scope.watch(pods, schedule);
  scope.watch(nodes, schedule);
}

function byName(a: KObj, b: KObj): number {
  return a.metadata.name.localeCompare(b.metadata.name);
}
