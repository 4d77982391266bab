// Services: type, ClusterIP, the address to open (NodePort or
// LoadBalancer), and the endpoints behind each.

import { KObj, R, inNs } from '../api';
import { h, fill, setText } from '../dom';
import { Table, feed } from '../table';
import { currentNs, section, stateNote, yamlHref } from '../ui';
import { condition, keyOf } from '../util';
import type { Informer, Scope } from '../watch';

/** The first Ready node's InternalIP: where NodePorts answer. */
export function nodeAddress(nodes: Informer | null): string {
  for (const n of nodes?.items.values() ?? []) {
    if (condition(n, 'Ready')?.status !== 'True') continue;
    const ip = (n.status?.addresses ?? []).find((a: any) => a.type === 'InternalIP')?.address;
    if (ip) return ip;
  }
  // Without the right to list nodes: the host the dashboard came from.
  return location.hostname;
}

/** The URL a person opens for a service, if it has one outside the cluster. */
export function serviceUrl(svc: KObj, nodes: Informer | null): string | null {
  const port = (svc.spec?.ports ?? [])[0];
  if (!port) return null;
  if (svc.spec?.type === 'LoadBalancer') {
    const ip = svc.status?.loadBalancer?.ingress?.[0]?.ip;
    if (ip) return `http://${ip}:${port.port}/`;
  }
  if ((svc.spec?.type === 'NodePort' || svc.spec?.type === 'LoadBalancer') && port.nodePort) {
    return `http://${nodeAddress(nodes)}:${port.nodePort}/`;
  }
  return null;
}

function ports(svc: KObj): string {
  return (svc.spec?.ports ?? []).map((p: any) => `${p.port}${p.nodePort ? ':' + p.nodePort : ''}/${p.protocol ?? 'TCP'}`).join(', ');
}

export function services(scope: Scope, main: HTMLElement): void {
  const ns = currentNs();
  const inf = scope.informer(inNs(R.services, ns));
  const slices = scope.informer(inNs(R.endpointslices, ns));
  const nodes = scope.informer(R.nodes);
  const endpointsOf = (svc: KObj): string => {
    const out: string[] = [];
    let ready = 0;
    for (const s of slices.items.values()) {
      if (s.metadata.namespace !== svc.metadata.namespace || s.metadata.labels?.['kubernetes.io/service-name'] !== svc.metadata.name) continue;
      for (const e of s.endpoints ?? []) {
        const ok = e.conditions?.ready !== false;
        if (ok) ready++;
        out.push(`${e.targetRef?.name ?? e.addresses?.[0] ?? '?'}${ok ? '' : ' (not ready)'}`);
      }
    }
    return out.length ? `${ready} ready: ${out.join(', ')}` : 'none';
  };
  const table = new Table('Services', [
    {
      title: 'Name', width: 'minmax(8rem, 1.5fr)',
      node: (o) => h('a', { href: yamlHref(`/api/v1/namespaces/${o.metadata.namespace}/services/${o.metadata.name}`) }),
      update: (a, o) => setText(a, o.metadata.name),
    },
    ...(ns ? [] : [{ title: 'Namespace', width: 'minmax(6rem, 1fr)', text: (o: KObj) => o.metadata.namespace ?? '' }]),
    { title: 'Type', width: '7rem', text: (o) => o.spec?.type ?? 'ClusterIP' },
    { title: 'Cluster IP', width: 'minmax(7rem, 1fr)', text: (o) => o.spec?.clusterIP ?? '' },
    { title: 'Ports', width: 'minmax(7rem, 1fr)', text: ports },
    {
      title: 'Open', width: 'minmax(10rem, 1.5fr)',
      node: () => h('span'),
      update: (el, o) => {
        const url = serviceUrl(o, nodes);
        const a = el.firstElementChild as HTMLAnchorElement | null;
        if (!url) { if (el.textContent !== '—') fill(el, '—'); return; }
        if (a?.getAttribute('href') === url) return;
        fill(el, h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', class: 'service-link', 'aria-label': `Open ${o.metadata.name} at ${url}` }, url));
      },
    },
    { title: 'Endpoints', width: 'minmax(12rem, 2fr)', text: endpointsOf },
  ], keyOf, undefined, 'No services.', 860);
  fill(main, h('h1', null, 'Services'), section('List', stateNote(scope, inf), table.el));
  scope.watch(inf, feed(table, inf.items));
  scope.watch(slices, () => table.refresh());
  scope.watch(nodes, () => table.refresh());
}
