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
const selected = (tier === 'all' ? tiers : [tier]).flatMap((t) => roots[t].flatMap(walk));
const files = selected.filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort();
if (files.length === 0) {
  console.error(`no test files for tier ${tier}${filters.length ? ' matching ' + filters.join(', ') : ''} (did the build run?)`);
  process.exit(1);
}
const concurrency = process.env.DISKLESS_TEST_CONCURRENCY ?? '2';
const r = spawnSync(process.execPath, ['--enable-source-maps', '--test', `--test-concurrency=${concurrency}`, ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
