// End-to-end: a real `wkube server` driven through the dashboard in
// headless Chromium. The cases share one server and run in order, as a
// person would use it: sign in, deploy, open, scale, read logs, edit,
// delete; then a view-only user; then the server restarting under the page.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  DESKTOP, PHONE, Server, launch, openPage, screenshot, signIn, until,
} from './harness.mjs';

const NS = 'default';

describe('dashboard', { timeout: 200_000 }, () => {
  const server = new Server();
  let browser;
  let admin; // { context, page, consoleErrors }
  let viewerToken;

  before(async () => {
    await server.start();
    browser = await launch();
    // A user who may only read namespace default (and the nodes' Overview
    // stays empty for them: nodes are cluster-scoped).
    viewerToken = server.token('viewer');
    await server.ok('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings`, {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding',
      metadata: { name: 'viewer-view' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'view' },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'viewer' }],
    });
  });

  after(async () => {
    await browser?.close();
    if (process.env.WKUBE_UI_SHOW_LOG) console.log(server.log().slice(-5000));
    await server.destroy();
  });

  it('signs in and shows the local node', async () => {
    admin = await openPage(browser, server);
    const { page } = admin;
    // The server's root sends a browser here; the page's files come with
    // a policy that allows nothing from elsewhere.
    const resp = await page.goto(`${server.url}/`);
    assert.equal(new URL(page.url()).pathname, '/ui/');
    assert.match(resp.headers()['content-security-policy'], /default-src 'self'/);
    await signIn(page, server.adminToken);
    const node = page.locator('article[data-node="node-1"]');
    await node.waitFor();
    await node.getByText('Ready', { exact: true }).waitFor();
    assert.match(await node.textContent(), /CPU requested/);
    // The token is in sessionStorage, nowhere else.
    const stored = await page.evaluate(() => ({ s: sessionStorage.getItem('wkube.token'), l: localStorage.length, c: document.cookie }));
    assert.equal(stored.s, server.adminToken);
    assert.equal(stored.l, 0);
    assert.equal(stored.c, '');
  });

  it('deploys hello-http by upload and its pod turns Running without a reload', async () => {
    const { page } = admin;
    await page.getByRole('link', { name: 'Deploy' }).click();
    await page.getByLabel('Module (.wasm HTTP component)').setInputFiles(server.example('hello-http'));
    await page.getByLabel('Name', { exact: true }).fill('hello');
    await page.getByLabel('Replicas').fill('1');
    await page.getByLabel('Service port').fill('80');
    await page.getByRole('button', { name: 'Deploy' }).click();
    await page.waitForURL(/#\/deployment\/default\/hello$/, { timeout: 30_000 });
    assert.equal(await page.locator('#view').getAttribute('data-view'), 'deployment');
    const pods = page.getByRole('table', { name: 'Pods of hello' });
    await pods.getByRole('row').filter({ hasText: 'Running' }).first().waitFor({ timeout: 60_000 });
    // The UI made what `wkube run` makes.
    const dep = await server.ok('GET', `/apis/apps/v1/namespaces/${NS}/deployments/hello`);
    assert.match(dep.spec.template.spec.containers[0].image, /^hello:sha-[0-9a-f]{12}$/);
    const svc = await server.ok('GET', `/api/v1/namespaces/${NS}/services/hello`);
    assert.equal(svc.spec.type, 'NodePort');
  });

  it('refuses an invalid module with the server\'s message', async () => {
    const { page } = admin;
    await page.goto(`${server.url}/ui/#/deploy`);
    await page.getByLabel('Module (.wasm HTTP component)').setInputFiles({ name: 'bad.wasm', mimeType: 'application/wasm', buffer: Buffer.from('not wasm at all') });
    await page.getByLabel('Name', { exact: true }).fill('bad');
    await page.getByRole('button', { name: 'Deploy' }).click();
    const err = page.locator('#d-error');
    await err.getByText(/refused.*not a WebAssembly binary/).waitFor();
  });

  it('opens the service link and reads the greeting', async () => {
    const { page, context } = admin;
    await page.getByRole('link', { name: 'Services' }).click();
    const link = page.getByRole('table', { name: 'Services' }).locator('a.service-link').first();
    await link.waitFor();
    const href = await link.getAttribute('href');
    assert.match(href, /^http:\/\/127\.97\.\d+\.1:\d+\/$/);
    const [opened] = await Promise.all([context.waitForEvent('page'), link.click()]);
    // The proxy may take a moment to route to the new endpoint.
    await until('the service to answer', async () => {
      await opened.goto(href, { timeout: 5000 });
      return (await opened.textContent('body')).includes('Hello from wkube!');
    }, 30_000, 500);
    await opened.close();
  });

  it('scales to 3 and shows three pods', async () => {
    const { page } = admin;
    await page.goto(`${server.url}/ui/#/deployment/${NS}/hello`);
    const replicas = page.getByLabel('Replicas');
    await until('the scale field to be enabled', () => replicas.isEnabled(), 10_000);
    await replicas.fill('3');
    await page.getByRole('button', { name: 'Scale', exact: true }).click();
    const table = page.getByRole('table', { name: 'Pods of hello' });
    await until('three running pods', async () => (await table.getByRole('row').filter({ hasText: 'Running' }).count()) === 3, 60_000);
    await page.getByText('3/3').first().waitFor({ timeout: 30_000 });
  });

  it('shows a pod\'s log, its previous run, and the logs of all pods', async () => {
    // A command module printing its arguments, restarted after each exit:
    // it writes logs and has previous runs.
    await server.ok('POST', '/apis/wkube.dev/v1/modules/printer/push?tag=v1', (await import('node:fs')).readFileSync(server.example('job')), { contentType: 'application/wasm' });
    await server.ok('POST', `/apis/apps/v1/namespaces/${NS}/deployments`, {
      apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'printer', labels: { app: 'printer' } },
      spec: {
        replicas: 2, selector: { matchLabels: { app: 'printer' } },
        template: { metadata: { labels: { app: 'printer' } }, spec: { containers: [{ name: 'main', image: 'printer:v1', args: ['hello', 'from', 'printer'] }] } },
      },
    });
    const { page } = admin;
    await page.goto(`${server.url}/ui/#/deployment/${NS}/printer`);
    const table = page.getByRole('table', { name: 'Pods of printer' });
    await until('two printer pods', async () => (await table.getByRole('row').count()) >= 3, 30_000);
    // Wait for a pod that has run at least twice, so it has a previous run.
    const podName = await until('a pod restarted twice', async () => {
      const list = await server.ok('GET', `/api/v1/namespaces/${NS}/pods?labelSelector=app%3Dprinter`);
      return list.items.find((p) => (p.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 2)?.metadata.name;
    }, 60_000, 500);
    await page.getByRole('button', { name: 'Show logs of all pods' }).click();
    const combined = page.getByRole('region', { name: 'Logs of all pods' }).locator('pre.logs');
    await until('lines of both pods, each with its pod\'s name', async () => {
      const text = await combined.textContent();
      const pods = new Set([...text.matchAll(/^\[(printer-[a-z0-9-]+)\] hello from printer$/gm)].map((m) => m[1]));
      return pods.size >= 2;
    }, 30_000, 250);

    await page.goto(`${server.url}/ui/#/pod/${NS}/${podName}`);
    const logs = page.getByLabel(`Logs of ${podName}`);
    await until('the pod\'s log', async () => (await logs.textContent()).includes('hello from printer'), 20_000, 200);
    await page.getByLabel('Previous run').check();
    await until('the previous run\'s log', async () => {
      const t = await logs.textContent();
      return t.includes('hello from printer') && !/not found/.test(t);
    }, 20_000, 200);
  });

  it('saves a screenshot of each main view at desktop and phone width', async () => {
    const views = ['overview', 'workloads', 'pods', 'services', 'events', 'map', 'usage', 'deploy', `deployment/${NS}/hello`, `yaml?path=${encodeURIComponent(`/apis/apps/v1/namespaces/${NS}/deployments/hello`)}`];
    for (const [label, size] of [['desktop', DESKTOP], ['phone', PHONE]]) {
      const { context, page } = await openPage(browser, server, { viewport: size, colorScheme: label === 'phone' ? 'dark' : 'light' });
      await signIn(page, server.adminToken);
      for (const v of views) {
        await page.goto(`${server.url}/ui/#/${v}`);
        await page.locator('#view h1').first().waitFor();
        await page.waitForTimeout(v === 'usage' ? 5500 : 400);
        await screenshot(page, `${label}-${v.split(/[/?]/)[0]}`);
      }
      await context.close();
    }
  });

  it('edits the Deployment\'s YAML: an invalid value is shown at its field, then fixed', async () => {
    const { page } = admin;
    await page.goto(`${server.url}/ui/#/yaml?path=${encodeURIComponent(`/apis/apps/v1/namespaces/${NS}/deployments/hello`)}`);
    const editor = page.getByLabel('The object, as YAML (applied with PUT)');
    await until('the YAML', async () => /\n {2}replicas: 3\n/.test(await editor.inputValue()), 10_000);
    const text = await editor.inputValue();
    await editor.fill(text.replace(/\n {2}replicas: 3\n/, '\n  replicas: -1\n'));
    await page.getByRole('button', { name: 'Apply' }).click();
    const cause = page.locator('.cause[data-field="spec.replicas"]');
    await cause.waitFor();
    assert.match(await cause.textContent(), /must be greater than or equal to 0/);
    assert.match(await cause.locator('.excerpt').textContent(), /replicas: -1/);
    // The caret is on the line the error names.
    const selected = await editor.evaluate((t) => t.value.slice(t.selectionStart, t.selectionEnd));
    assert.match(selected, /replicas: -1/);
    await editor.fill((await editor.inputValue()).replace(/\n {2}replicas: -1\n/, '\n  replicas: 2\n'));
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.getByText(/^Applied: resourceVersion/).waitFor();
    assert.equal(await cause.count(), 0);
    const dep = await server.ok('GET', `/apis/apps/v1/namespaces/${NS}/deployments/hello`);
    assert.equal(dep.spec.replicas, 2);
  });

  it('deletes the workload after a confirmation', async () => {
    const { page, consoleErrors } = admin;
    await page.goto(`${server.url}/ui/#/deployment/${NS}/hello`);
    const del = page.getByRole('button', { name: 'Delete', exact: true });
    await until('delete to be enabled', () => del.isEnabled(), 10_000);
    await del.click();
    const dialog = page.getByRole('dialog');
    await dialog.getByText(/Delete Deployment hello in default and its pods, and Service hello\?/).waitFor();
    await dialog.getByRole('button', { name: 'Delete' }).click();
    await page.waitForURL(/#\/workloads$/);
    await until('the Deployment and Service to be gone', async () =>
      (await server.api('GET', `/apis/apps/v1/namespaces/${NS}/deployments/hello`)).status === 404
      && (await server.api('GET', `/api/v1/namespaces/${NS}/services/hello`)).status === 404, 20_000, 200);
    await page.getByRole('table', { name: 'Deployments' }).getByRole('link', { name: 'hello', exact: true }).waitFor({ state: 'detached' });
    // Nothing went wrong in the page but the refusals the cases asked for.
    const unexpected = consoleErrors.filter((e) => !/status of (422|400)/.test(e));
    assert.deepEqual(unexpected, []);
  });

  it('gives a view-only token the lists, disabled controls, and a clear refusal', async () => {
    const { context, page } = await openPage(browser, server);
    await signIn(page, viewerToken);
    await page.getByRole('link', { name: 'Workloads' }).click();
    const row = page.getByRole('table', { name: 'Deployments' }).getByRole('row').filter({ hasText: 'printer' });
    await row.waitFor();
    const up = row.getByRole('button', { name: 'Scale printer up' });
    await until('scale to be disabled', async () => (await up.getAttribute('data-denied')) === 'true', 10_000);
    assert.equal(await up.isDisabled(), true);
    await page.getByRole('link', { name: 'Pods' }).click();
    await page.getByRole('table', { name: 'Pods in default' }).getByRole('row').filter({ hasText: 'printer' }).first().waitFor();

    await page.goto(`${server.url}/ui/#/deployment/${NS}/printer`);
    const del = page.getByRole('button', { name: 'Delete', exact: true });
    await until('delete to be disabled', async () => (await del.getAttribute('data-denied')) === 'true', 10_000);
    assert.equal(await del.isDisabled(), true);
    const scaleBtn = page.getByRole('button', { name: 'Scale', exact: true });
    await until('scale to be disabled', async () => (await scaleBtn.getAttribute('data-denied')) === 'true', 10_000);

    // Called anyway (the control forced on): the server refuses, and the
    // page says so.
    await page.evaluate(() => {
      for (const el of document.querySelectorAll('[data-denied]')) (el).disabled = false;
    });
    await page.getByLabel('Replicas').fill('5');
    await scaleBtn.click();
    const alert = page.getByRole('alert').filter({ hasText: 'Forbidden' });
    await alert.waitFor();
    assert.match(await alert.textContent(), /viewer.*cannot patch resource "deployments\/scale"|cannot patch/);
    const dep = await server.ok('GET', `/apis/apps/v1/namespaces/${NS}/deployments/printer`);
    assert.equal(dep.spec.replicas, 2);
    await context.close();
  });

  it('says when the server is gone and recovers when it is back', async () => {
    const { page } = admin;
    await page.goto(`${server.url}/ui/#/pods`);
    const table = page.getByRole('table', { name: 'Pods in default' });
    await until('the printer pods', async () => (await table.getByRole('row').filter({ hasText: 'printer' }).count()) === 2, 20_000);
    await server.stop();
    const banner = page.locator('#connection');
    await banner.getByText(/connection to the server is lost/).waitFor({ timeout: 20_000 });
    await server.start();
    await banner.waitFor({ state: 'hidden', timeout: 30_000 });
    // The watch resumed: a change made now shows up without a reload.
    await server.ok('PATCH', `/apis/apps/v1/namespaces/${NS}/deployments/printer/scale`, { spec: { replicas: 3 } }, { contentType: 'application/merge-patch+json' });
    await until('a third printer pod', async () => (await table.getByRole('row').filter({ hasText: 'printer' }).count()) === 3, 30_000);
  });
});
