#!/usr/bin/env node
// Runs the compiled test files with Node's test runner.
//   node scripts/run-tests.mjs [unit|integration|interop|e2e|all] [filter...]
// unit: *.test.js beside the sources; the others: test/<tier>/**.
// A filter keeps the files whose path contains it.
import { readdirSync, statSync } from 'node:fs';
import { join, sep } from 'node:path';
import { spawnSync } from 'node:child_process';

const tiers = ['unit', 'integration', 'interop', 'e2e'];
const args = process.argv.slice(2);
const tier = tiers.includes(args[0]) || args[0] === 'all' ? args.shift() : 'all';
const filters = args;

function walk(dir) {
  let out = [];
  let entries;
  try { entries = readdirSync(dir); } catch { return out; }
  for (const name of entries) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const roots = { unit: ['dist/src', 'dist/bench'], integration: ['dist/test/integration'], interop: ['dist/test/interop'], e2e: ['dist/test/e2e'] };
// Tiers that boot VMs (interop, e2e) run one file at a time: on two cores,
// TCG guests side by side slow each other past their timeouts.
const concurrencyOf = { unit: process.env.DISKLESS_TEST_CONCURRENCY ?? '2', integration: process.env.DISKLESS_TEST_CONCURRENCY ?? '2', interop: '1', e2e: '1' };
const groups = [
  { tiers: ['unit', 'integration'], concurrency: concurrencyOf.integration },
  { tiers: ['interop', 'e2e'], concurrency: '1' },
].map((g) => ({ ...g, tiers: g.tiers.filter((t) => tier === 'all' || t === tier) })).filter((g) => g.tiers.length > 0);

const pick = (t) => roots[t].flatMap(walk).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort();
const runs = groups.map((g) => ({ ...g, files: g.tiers.flatMap(pick) })).filter((g) => g.files.length > 0);
if (runs.length === 0) {
  console.error(`no test files for tier ${tier}${filters.length ? ' matching ' + filters.join(', ') : ''} (did the build run?)`);
  process.exit(1);
}
let status = 0;
const totals = { pass: 0, fail: 0, skipped: 0 };
for (const r of runs) {
  const res = spawnSync(process.execPath, ['--enable-source-maps', '--test', `--test-concurrency=${r.concurrency}`, ...r.files], { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 30 });
  const out = res.stdout.toString();
  process.stdout.write(out);
  for (const k of Object.keys(totals)) {
    const m = new RegExp(`^# ${k} (\\d+)$`, 'm').exec(out);
    if (m) totals[k] += Number(m[1]);
  }
  if (res.status !== 0) status = res.status ?? 1;
}
if (runs.length > 1) console.log(`\ntotal: ${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped`);
process.exit(status);
