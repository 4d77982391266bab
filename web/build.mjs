// Builds the dashboard into dist/ (or the directory given with --out), and
// with --check builds into a temporary directory and fails when the
// checked-in dist/ differs from it byte for byte: `cargo build` embeds
// dist/ as it is, so a source change without a rebuild must not pass.
import * as esbuild from 'esbuild';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const check = args.includes('--check');
const outArg = args.indexOf('--out');
const dist = join(here, 'dist');

async function build(out) {
  mkdirSync(out, { recursive: true });
  const common = {
    bundle: true,
    minify: true,
    target: ['es2022', 'chrome110', 'firefox110', 'safari16'],
    logLevel: 'warning',
    legalComments: 'eof',
    charset: 'utf8',
  };
  await esbuild.build({
    ...common,
    entryPoints: [join(here, 'src/main.ts')],
    outfile: join(out, 'app.js'),
    format: 'esm',
  });
  await esbuild.build({
    ...common,
    entryPoints: [join(here, 'src/style.css')],
    outfile: join(out, 'app.css'),
  });
  for (const f of ['index.html', 'icon.svg']) copyFileSync(join(here, 'src', f), join(out, f));
}

if (check) {
  const tmp = mkdtempSync(join(tmpdir(), 'wkube-web-'));
  try {
    await build(tmp);
    const want = readdirSync(tmp).sort();
    const have = readdirSync(dist).sort();
    const stale = [];
    for (const f of new Set([...want, ...have])) {
      if (!want.includes(f) || !have.includes(f)) { stale.push(f); continue; }
      if (!readFileSync(join(tmp, f)).equals(readFileSync(join(dist, f)))) stale.push(f);
    }
    if (stale.length) {
      console.error(`web/dist is stale (${stale.join(', ')}): run \`npm run build\` in web/ and commit web/dist`);
      process.exit(1);
    }
    console.log(`web/dist is up to date (${want.join(', ')})`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
} else {
  const out = outArg >= 0 ? args[outArg + 1] : dist;
  rmSync(out, { recursive: true, force: true });
  await build(out);
}
