// Benchmark of the dashboard with many pods: time to the first useful
// paint of the pods view, main-thread time per watch event, bundle size.
//
//   node bench/pods.mjs            5,000 pods, 300 watch events (by hand)
//   node bench/pods.mjs --smoke    200 pods, 40 events (scripts/test)
//   node bench/pods.mjs --pods N --events M
//
// The pods are bound to a node that does not exist, so they stay Pending
// and cost the server nothing but storage. Targets: first paint <= 1 s,
// <= 100 ms per event, bundle <= 300 KB gzipped.

import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Server, launch, openPage, signIn, until } from '../tests/harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const smoke = argv.includes('--smoke');
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const PODS = opt('--pods', smoke ? 200 : 5000);
const EVENTS = opt('--events', smoke ? 40 : 300);
const NS = 'bench';
const TARGETS = { firstPaintMs: 1000, perEventMs: 100, bundleGzipBytes: 300 * 1024 };

function bundleSize() {
  const dist = join(here, '..', 'dist');
  let raw = 0;
  let gz = 0;
  for (const f of readdirSync(dist)) {
    const b = readFileSync(join(dist, f));
    raw += b.length;
    gz += gzipSync(b, { level: 9 }).length;
  }
  return { raw, gz };
}

function pod(i) {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: `bench-${String(i).padStart(5, '0')}`, labels: { app: 'bench', shard: String(i % 10) } },
    spec: { nodeName: 'bench-absent-node', containers: [{ name: 'main', image: 'bench:v1', resources: { requests: { cpu: '10m', memory: '16Mi' } } }] },
  };
}

/** Runs `f` over `items` with at most `n` at once. */
async function pool(items, n, f) {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await f(items[next++]);
  }));
}

const pct = (xs, p) => {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const server = new Server();
let browser;
let failed = false;
try {
  await server.start();
  await server.ok('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  await until('the namespace\'s default ServiceAccount', async () => (await server.api('GET', `/api/v1/namespaces/${NS}/serviceaccounts/default`)).status === 200, 30_000, 100);
  const t0 = Date.now();
  await pool([...Array(PODS).keys()], 16, (i) => server.ok('POST', `/api/v1/namespaces/${NS}/pods`, pod(i)));
  const createSecs = (Date.now() - t0) / 1000;

  browser = await launch();
  const { page, consoleErrors } = await openPage(browser, server);
  await signIn(page, server.adminToken);
  await page.evaluate((ns) => sessionStorage.setItem('wkube.ns', ns), NS);

  // First useful paint: a fresh load of the pods view, from navigation
  // start to the frame after the rows of the full list are placed.
  const paints = [];
  for (let run = 0; run < 3; run++) {
    await page.goto(`${server.url}/ui/#/pods`);
    await page.reload();
    const painted = await page.waitForFunction(() => performance.getEntriesByName('wkube-pods-painted')[0]?.startTime, null, { timeout: 30_000 });
    paints.push(await painted.jsonValue());
  }
  const rows = await page.locator('[role="table"][aria-label="Pods in bench"] .spacer [role="row"]').count();
  const rowCount = await page.locator('[role="table"][aria-label="Pods in bench"]').getAttribute('aria-rowcount');
  if (Number(rowCount) !== PODS + 1) throw new Error(`the table has ${rowCount} rows for ${PODS} pods`);

  // Watch events: label changes (a row updated in place), and deletions
  // and creations (rows shifted), paced so each is its own event.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  await page.evaluate(() => { window.wkubeStats.eventTimes.length = 0; });
  const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const before = await metrics();
  const ops = [];
  for (let i = 0; i < EVENTS; i++) {
    const target = `bench-${String((i * 7919) % PODS).padStart(5, '0')}`;
    if (i % 10 === 9) ops.push(['DELETE', `/api/v1/namespaces/${NS}/pods/${target}`]);
    else if (i % 10 === 8) ops.push(['POST', `/api/v1/namespaces/${NS}/pods`, pod(PODS + i)]);
    else ops.push(['PATCH', `/api/v1/namespaces/${NS}/pods/${target}`, { metadata: { labels: { touched: String(i) } } }]);
  }
  const t1 = Date.now();
  await pool(ops, 4, ([m, p, body]) => server.ok(m, p, body, m === 'PATCH' ? { contentType: 'application/merge-patch+json' } : {}));
  await until('every event to reach the page', async () => (await page.evaluate(() => window.wkubeStats.eventTimes.length)) >= EVENTS, 60_000, 100);
  const streamSecs = (Date.now() - t1) / 1000;
  await page.waitForTimeout(300);
  const after = await metrics();
  const times = await page.evaluate(() => [...window.wkubeStats.eventTimes]);
  const taskMsPerEvent = ((after.TaskDuration - before.TaskDuration) * 1000) / times.length;

  const bundle = bundleSize();
  const report = {
    pods: PODS,
    createSeconds: createSecs,
    firstPaintMs: Math.round(Math.min(...paints)),
    firstPaintRunsMs: paints.map(Math.round),
    rowsInDom: rows,
    events: times.length,
    eventsSeconds: streamSecs,
    handlerMsP50: +pct(times, 50).toFixed(2),
    handlerMsP95: +pct(times, 95).toFixed(2),
    handlerMsMax: +Math.max(...times).toFixed(2),
    mainThreadMsPerEvent: +taskMsPerEvent.toFixed(2),
    bundleBytes: bundle.raw,
    bundleGzipBytes: bundle.gz,
    consoleErrors: consoleErrors.length,
  };
  console.log(JSON.stringify(report, null, 2));
  const checks = [
    ['first paint', report.firstPaintMs, smoke ? 5000 : TARGETS.firstPaintMs],
    ['max main-thread time of one event', report.handlerMsMax, TARGETS.perEventMs],
    ['main-thread time per event (all tasks)', report.mainThreadMsPerEvent, TARGETS.perEventMs],
    ['bundle, gzipped', report.bundleGzipBytes, TARGETS.bundleGzipBytes],
  ];
  for (const [what, got, limit] of checks) {
    const ok = got <= limit;
    if (!ok) failed = true;
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}: ${got} (limit ${limit})`);
  }
  if (consoleErrors.length) {
    failed = true;
    console.log(`FAIL console errors: ${consoleErrors.join(' | ')}`);
  }
} catch (e) {
  failed = true;
  console.error(e);
  console.error(server.log().slice(-3000));
} finally {
  await browser?.close();
  await server.destroy();
}
process.exit(failed ? 1 : 0);
