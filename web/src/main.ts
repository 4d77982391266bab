// The dashboard: sign-in, the frame around the views (navigation,
// namespace, connection state) and the router from the URL's hash.

import { ApiError, R, can, connection, onUnauthorized, setToken, token, whoami } from './api';
import { h, fill } from './dom';
import { currentNs, mountNotices, notify, setNs } from './ui';
import { Scope, eventTimes } from './watch';
import { overview } from './views/overview';
import { workloads } from './views/workloads';
import { pods } from './views/pods';
import { podPage } from './views/pod';
import { workloadPage } from './views/workload';
import { services } from './views/services';
import { events } from './views/events';
import { graph } from './views/map';
import { usage } from './views/usage';
import { yamlView } from './views/yaml';
import { deploy } from './views/deploy';

export type View = (scope: Scope, main: HTMLElement, args: string[], query: URLSearchParams) => void;

const NAV: [string, string][] = [
  ['overview', 'Overview'],
  ['workloads', 'Workloads'],
  ['pods', 'Pods'],
  ['services', 'Services'],
  ['events', 'Events'],
  ['map', 'Map'],
  ['usage', 'Usage'],
  ['deploy', 'Deploy'],
];

const VIEWS: Record<string, View> = {
  overview, workloads, pods, services, events, map: graph, usage, deploy,
  pod: podPage,
  deployment: (s, m, a) => workloadPage(s, m, 'deployments', a),
  daemonset: (s, m, a) => workloadPage(s, m, 'daemonsets', a),
  job: (s, m, a) => workloadPage(s, m, 'jobs', a),
  yaml: yamlView,
};

const root = document.getElementById('app')!;

function login(message = ''): void {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const err = h('p', { class: 'error', role: 'alert', id: 'login-error' }, message);
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'wkube'),
    h('label', { for: 'token' }, 'Bearer token'),
    input,
    h('p', { class: 'hint', id: 'token-hint' },
      'Get one with ', h('code', null, 'wkube token create --user NAME'),
      ' (add ', h('code', null, '--group system:masters'), ' for an administrator). ',
      'The token stays in this tab only.'),
    err,
    button);
  input.setAttribute('aria-describedby', 'token-hint login-error');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    err.textContent = '';
    setToken(input.value.trim());
    try {
      const me = await whoami();
      start(me.username);
    } catch (x) {
      setToken(null);
      err.textContent = x instanceof ApiError && x.status === 401
        ? 'The server does not accept this token (401): it may be expired or from another cluster.'
        : x instanceof ApiError ? x.describe() : String(x);
      button.disabled = false;
    }
  });
  fill(root, h('main', { class: 'login-page' }, form));
  input.focus();
}

let scope: Scope | null = null;
let mainEl: HTMLElement;
let navLinks = new Map<string, HTMLAnchorElement>();
let nsControl: HTMLElement;

function start(user: string): void {
  navLinks = new Map(NAV.map(([id, title]) => [id, h('a', { href: `#/${id}` }, title)]));
  const banner = h('div', { class: 'banner', role: 'status', hidden: true, id: 'connection' });
  const notices = h('div', { class: 'notices', 'aria-live': 'assertive' });
  mountNotices(notices);
  nsControl = h('div', { class: 'ns' });
  const signOut = h('button', { type: 'button', class: 'link' }, 'Sign out');
  signOut.addEventListener('click', () => {
    setToken(null);
    scope?.dispose();
    scope = null;
    login();
  });
  mainEl = h('main', { id: 'view', tabindex: '-1' });
  fill(root,
    h('a', { class: 'skip', href: '#view', id: 'skip' }, 'Skip to content'),
    h('header', null,
      h('a', { class: 'brand', href: '#/overview' }, h('img', { src: 'icon.svg', alt: '', width: 24, height: 24 }), 'wkube'),
      h('nav', { 'aria-label': 'Views' }, [...navLinks.values()]),
      h('div', { class: 'who' }, nsControl, h('span', { class: 'user', title: 'Signed in as' }, user), signOut)),
    banner, notices, mainEl);
  root.querySelector('#skip')!.addEventListener('click', (e) => { e.preventDefault(); mainEl.focus(); });
  connection.listen((up) => {
    banner.hidden = up;
    banner.textContent = up ? '' : 'The connection to the server is lost. Retrying; the views catch up once it is back.';
  });
  void namespaceSelector();
  window.onhashchange = route;
  route();
}

async function namespaceSelector(): Promise<void> {
  const ns = currentNs();
  const label = h('label', { for: 'ns' }, 'Namespace');
  let allowed = false;
  try {
    allowed = await can({ verb: 'list', resource: 'namespaces' });
  } catch { /* offline: a text field will do */ }
  if (!allowed) {
    const input = h('input', { id: 'ns', value: ns, size: 12, placeholder: 'all' });
    input.addEventListener('change', () => { setNs(input.value.trim()); route(); });
    fill(nsControl, label, input);
    return;
  }
  const select = h('select', { id: 'ns' }, h('option', { value: '' }, 'All namespaces'));
  fill(nsControl, label, select);
  const names = new Set<string>([ns].filter(Boolean));
  const render = () => {
    const keep = currentNs();
    fill(select, h('option', { value: '' }, 'All namespaces'),
      [...names].sort().map((n) => h('option', { value: n }, n)));
    select.value = keep;
  };
  render();
  select.addEventListener('change', () => { setNs(select.value); route(); });
  // The namespace list is watched like everything else; it lives as long
  // as the page.
  const s = new Scope();
  const inf = s.informer(R.namespaces);
  s.watch(inf, (c) => {
    if (c.type === 'SYNC') { names.clear(); for (const o of inf.items.values()) names.add(o.metadata.name); render(); }
    else if (c.type === 'ADDED' && !names.has(c.obj.metadata.name)) { names.add(c.obj.metadata.name); render(); }
    else if (c.type === 'DELETED') { names.delete(c.obj.metadata.name); render(); }
  });
}

function route(): void {
  const hash = location.hash.replace(/^#\/?/, '') || 'overview';
  const [pathPart, queryPart = ''] = hash.split('?');
  const [name, ...args] = pathPart.split('/').map(decodeURIComponent);
  const view = VIEWS[name] ?? overview;
  scope?.dispose();
  scope = new Scope();
  for (const [id, a] of navLinks) {
    if (id === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  mainEl.replaceChildren();
  mainEl.dataset.view = name;
  try {
    view(scope, mainEl, args, new URLSearchParams(queryPart));
  } catch (e) {
    notify(e);
  }
}

onUnauthorized(() => {
  if (!token()) return;
  setToken(null);
  scope?.dispose();
  scope = null;
  login('The server no longer accepts your token (401). Sign in again.');
});

// What the benchmark reads: the main-thread time of recent watch events.
(window as any).wkubeStats = { eventTimes };

async function boot(): Promise<void> {
  if (!token()) return login();
  try {
    const me = await whoami();
    start(me.username);
  } catch (e) {
    if (e instanceof ApiError && e.network) {
      // Server away at load: sign-in would fail too; try again shortly.
      fill(root, h('main', { class: 'login-page' }, h('p', { role: 'status' }, 'Waiting for the server…')));
      setTimeout(boot, 2000);
      return;
    }
    setToken(null);
    login(e instanceof ApiError ? e.describe() : String(e));
  }
}

void boot();
