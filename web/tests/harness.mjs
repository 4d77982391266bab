// Test fixtures for the dashboard: a real `wkube server` on loopback with
// a temporary data directory, tokens minted with `wkube token create`,
// API calls with the cluster CA, and Debian's Chromium driven by
// playwright-core. Every wait is bounded.

import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

export const WKUBE = process.env.WKUBE_BIN
  ?? join(process.env.CARGO_TARGET_DIR ?? join(process.env.HOME ?? '/root', '.cache/wkube/target'), 'debug/wkube');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const NODE = 'node-1';

/** Where screenshots go: a test artifact, never the repository. */
export const ARTIFACTS = process.env.WKUBE_UI_ARTIFACTS
  ?? join(process.env.CARGO_TARGET_DIR ?? tmpdir(), 'wkube-ui-artifacts');

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns a truthy value, at most `ms`. */
export async function until(what, check, ms = 30_000, every = 100) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

/**
 * Addresses of this test cluster, away from those the Rust tests use
 * (127.1-95.x.x and their /20s of 127.128.0.0/9), so both may run at once.
 */
function addresses() {
  const z = 10 + (process.pid % 200);
  return {
    nodeIp: `127.97.${z}.1`,
    serviceCidr: `127.98.${z}.0/24`,
    clusterCidr: `127.${160 + (process.pid % 90)}.0.0/20`,
    lbRange: `127.99.${z}.100-127.99.${z}.199`,
  };
}

export class Server {
  constructor() {
    this.root = mkdtempSync(join(tmpdir(), 'wkube-ui-test-'));
    this.dataDir = join(this.root, 'data');
    this.logFile = join(this.root, 'server.log');
    this.addr = addresses();
    this.port = 0;
    this.child = null;
  }

  /** Starts (or restarts, on the same port and data) and waits until it serves. */
  async start() {
    for (const f of ['api.endpoint', 'etcd.endpoint']) rmSync(join(this.dataDir, f), { force: true });
    const log = openSync(this.logFile, 'a');
    const a = this.addr;
    this.child = spawn(WKUBE, [
      '--data-dir', this.dataDir, 'server',
      '--etcd-listen', '127.0.0.1:0',
      '--listen', `127.0.0.1:${this.port}`,
      '--node-ip', a.nodeIp,
      '--agent-listen', `${a.nodeIp}:0`,
      '--service-cidr', a.serviceCidr,
      '--cluster-cidr', a.clusterCidr,
      '--node-cidr-mask-size', '24',
      '--lb-range', a.lbRange,
      '--node-name', NODE,
      '--leader-elect=false',
      '--backoff-initial', '1',
      '--backoff-max', '2',
      // Autoscalers act within a second, so a test sees them without long waits.
      '--horizontal-pod-autoscaler-sync-period=1s',
    ], { stdio: ['ignore', log, log], env: { ...process.env, RUST_LOG: 'info' } });
    const child = this.child;
    let exited = null;
    child.on('exit', (code, sig) => { exited = `${code ?? sig}`; });
    const url = await until('the server to publish its endpoint', () => {
      if (exited !== null) throw new Error(`wkube server exited (${exited}):\n${this.log().slice(-3000)}`);
      const ep = join(this.dataDir, 'api.endpoint');
      const kc = join(this.dataDir, 'admin.kubeconfig');
      if (!existsSync(ep) || !existsSync(kc)) return null;
      const api = readFileSync(ep, 'utf8');
      if (!api.endsWith('\n') || !readFileSync(kc, 'utf8').includes(api.trim())) return null;
      return api.trim();
    }, 60_000, 50);
    this.url = url;
    this.port = Number(new URL(url).port);
    this.ca = readFileSync(join(this.dataDir, 'pki/ca.crt'));
    if (!this.adminToken) this.adminToken = this.token('dash-admin', ['system:masters']);
  }

  /** Stops the process: SIGTERM, then SIGKILL after 10 s. */
  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) { this.child = null; return; }
    const done = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(t);
    this.child = null;
  }

  async destroy() {
    await this.stop();
    if (!process.env.WKUBE_KEEP_TEST_DIR) rmSync(this.root, { recursive: true, force: true });
  }

  log() {
    try { return readFileSync(this.logFile, 'utf8'); } catch { return ''; }
  }

  /** A bearer token for a user, minted offline from the data directory. */
  token(user, groups = []) {
    const args = ['--data-dir', this.dataDir, 'token', 'create', '--user', user, '--ttl', '2h'];
    for (const g of groups) args.push('--group', g);
    return execFileSync(WKUBE, args, { encoding: 'utf8', timeout: 30_000 }).trim();
  }

  /** `wkube example NAME -o FILE`. */
  example(name) {
    const out = join(this.root, `${name}.wasm`);
    execFileSync(WKUBE, ['example', name, '-o', out], { timeout: 30_000 });
    return out;
  }

  /** One API call as `token` (the admin by default); resolves { status, body }. */
  api(method, path, body, { token = this.adminToken, contentType = 'application/json', timeout = 15_000 } = {}) {
    return new Promise((resolveP, reject) => {
      const data = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
      const req = request(`${this.url}${path}`, {
        method,
        ca: this.ca,
        timeout,
        headers: {
          Authorization: `Bearer ${token}`,
          Accept: 'application/json',
          ...(data ? { 'Content-Type': contentType, 'Content-Length': data.length } : {}),
        },
      }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed = text;
          try { parsed = JSON.parse(text); } catch { /* text */ }
          resolveP({ status: res.statusCode, body: parsed });
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on('error', reject);
      if (data) req.write(data);
      req.end();
    });
  }

  /** An API call that must succeed. */
  async ok(method, path, body, opts) {
    const r = await this.api(method, path, body, opts);
    if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }
}

/** Headless Chromium from Debian, as root. */
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
    timeout: 30_000,
  });
}

export const DESKTOP = { width: 1366, height: 900 };
export const PHONE = { width: 390, height: 844 };

/** A page on the dashboard, its console errors collected. */
export async function openPage(browser, server, { viewport = DESKTOP, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport, colorScheme });
  context.setDefaultTimeout(20_000);
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
  await page.goto(`${server.url}/ui/`);
  return { context, page, consoleErrors };
}

export async function signIn(page, token) {
  await page.getByLabel('Bearer token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Views' }).waitFor();
}

export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = resolve(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}
