// Deploy a .wasm: push the module (with upload progress), then create the
// Deployment and the Service `wkube run` creates, and open the workload.

import { ApiError, call, can, fromStatus, headers } from '../api';
import { h, fill, setText } from '../dom';
import { notify, section, targetNs, workloadHref } from '../ui';
import type { Scope } from '../watch';

const NAME_RE = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** POSTs the bytes with XMLHttpRequest, the one API with upload progress. */
function push(name: string, tag: string, file: File, onProgress: (done: number, total: number) => void): Promise<any> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/apis/wkube.dev/v1/modules/${encodeURIComponent(name)}/push?tag=${encodeURIComponent(tag)}`);
    for (const [k, v] of Object.entries(headers({ 'Content-Type': 'application/wasm' }))) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      let body: any = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(fromStatus(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, 'The server cannot be reached.'));
    xhr.send(file);
  });
}

async function digestTag(file: File): Promise<string> {
  const sum = new Uint8Array(await crypto.subtle.digest('SHA-256', await file.arrayBuffer()));
  return 'sha-' + [...sum.slice(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** Creates the object, or merges into it when it exists (as `wkube run`). */
async function createOrMerge(collection: string, obj: any): Promise<void> {
  try {
    await call('POST', collection, obj);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 409)) throw e;
    await call('PATCH', `${collection}/${encodeURIComponent(obj.metadata.name)}`, obj, { contentType: 'application/merge-patch+json' });
  }
}

export function deploy(_scope: Scope, main: HTMLElement): void {
  const ns = targetNs();
  const file = h('input', { id: 'd-file', type: 'file', accept: '.wasm,application/wasm', required: true });
  const name = h('input', { id: 'd-name', required: true, pattern: NAME_RE.source, autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'd-name-hint' });
  const replicas = h('input', { id: 'd-replicas', type: 'number', min: 0, max: 100, value: 1, required: true });
  const port = h('input', { id: 'd-port', type: 'number', min: 1, max: 65535, value: 80, required: true });
  const type = h('select', { id: 'd-type' },
    h('option', { value: 'NodePort' }, 'NodePort (a port on every node)'),
    h('option', { value: 'LoadBalancer' }, 'LoadBalancer (an address of its own)'),
    h('option', { value: 'ClusterIP' }, 'ClusterIP (inside the cluster)'));
  const progress = h('progress', { id: 'd-progress', max: 100, value: 0, 'aria-label': 'Upload' });
  const step = h('p', { class: 'hint', role: 'status', id: 'd-step' });
  const err = h('div', { class: 'error', role: 'alert', id: 'd-error' });
  const submit = h('button', { type: 'submit' }, 'Deploy');
  file.addEventListener('change', () => {
    const f = file.files?.[0];
    if (f && !name.value) name.value = f.name.replace(/\.wasm$/, '').toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^[^a-z]+|-+$/g, '').slice(0, 63);
  });
  const form = h('form', { class: 'form', 'aria-labelledby': 'deploy-title', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'd-file' }, 'Module (.wasm HTTP component)'), file),
    h('div', { class: 'field' }, h('label', { for: 'd-name' }, 'Name'), name,
      h('span', { class: 'hint', id: 'd-name-hint' }, 'Lower-case letters, digits and "-": names the Deployment, the Service and the module.')),
    h('div', { class: 'row2' },
      h('div', { class: 'field' }, h('label', { for: 'd-replicas' }, 'Replicas'), replicas),
      h('div', { class: 'field' }, h('label', { for: 'd-port' }, 'Service port'), port)),
    h('div', { class: 'field' }, h('label', { for: 'd-type' }, 'Reached as'), type),
    h('div', { class: 'field' }, h('label', { for: 'd-progress' }, 'Upload'), progress, step),
    err,
    h('div', { class: 'toolbar' }, submit));
  fill(main, h('h1', { id: 'deploy-title' }, 'Deploy a .wasm'), h('p', { class: 'hint' }, `Into namespace ${ns}.`), section('Module', form));

  // The three writes a deploy makes; the button says so when one is refused.
  Promise.all([
    can({ verb: 'create', group: 'wkube.dev', resource: 'modules', subresource: 'push', name: '' }),
    can({ verb: 'create', group: 'apps', resource: 'deployments', namespace: ns }),
    can({ verb: 'create', resource: 'services', namespace: ns }),
  ]).then((ok) => {
    if (ok.every(Boolean)) return;
    submit.disabled = true;
    submit.dataset.denied = 'true';
    submit.title = 'Your token may not push modules and create Deployments and Services here';
    setText(step, submit.title);
  }, () => {});

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.replaceChildren();
    const f = file.files?.[0];
    const n = name.value.trim();
    const problems: string[] = [];
    if (!f) problems.push('Pick a .wasm file.');
    if (!NAME_RE.test(n)) problems.push('The name must be lower-case letters, digits and "-", starting with a letter.');
    const reps = parseInt(replicas.value, 10);
    const p = parseInt(port.value, 10);
    if (!(reps >= 0)) problems.push('Replicas must be 0 or more.');
    if (!(p >= 1 && p <= 65535)) problems.push('The port must be between 1 and 65535.');
    if (problems.length || !f) {
      fill(err, problems.map((x) => h('p', null, x)));
      return;
    }
    submit.disabled = true;
    try {
      setText(step, 'Hashing the module…');
      const tag = await digestTag(f);
      setText(step, 'Uploading…');
      await push(n, tag, f, (done, total) => {
        const pct = total ? Math.round((done / total) * 100) : 0;
        progress.value = pct;
        setText(step, `Uploading… ${pct}% (${done} of ${total} bytes)`);
      });
      progress.value = 100;
      const labels = { app: n };
      setText(step, 'Creating the Deployment…');
      await createOrMerge(`/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/deployments`, {
        apiVersion: 'apps/v1', kind: 'Deployment',
        metadata: { name: n, namespace: ns, labels },
        spec: {
          replicas: reps,
          selector: { matchLabels: labels },
          template: {
            metadata: { labels },
            spec: { containers: [{ name: n, image: `${n}:${tag}`, ports: [{ name: 'http', containerPort: 8080 }] }] },
          },
        },
      });
      setText(step, 'Creating the Service…');
      await createOrMerge(`/api/v1/namespaces/${encodeURIComponent(ns)}/services`, {
        apiVersion: 'v1', kind: 'Service',
        metadata: { name: n, namespace: ns, labels },
        spec: { type: type.value, selector: labels, ports: [{ name: 'http', port: p, targetPort: 'http' }] },
      });
      setText(step, 'Deployed.');
      notify(`Deployed ${n}.`, 'info');
      location.hash = workloadHref('deployment', ns, n);
    } catch (x) {
      const msg = x instanceof ApiError ? x.describe() : String(x);
      fill(err, h('p', null, x instanceof ApiError && x.status === 422 ? `The module was refused: ${msg}` : msg));
      setText(step, '');
      submit.disabled = false;
    }
  });
}
