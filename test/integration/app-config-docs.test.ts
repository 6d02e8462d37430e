import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { renderConfigDocs } from '../../src/app/config-docs.js';

test('docs/configuration.md matches the configuration schema', () => {
  const actual = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');
  assert.equal(actual, renderConfigDocs(), 'docs/configuration.md is stale: run `npx tsc && bin/diskless config docs > docs/configuration.md`');
});
