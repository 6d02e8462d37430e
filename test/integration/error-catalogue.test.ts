import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadCatalogues, renderErrorDocs } from '../helpers/error-catalogue.js';

test('docs/errors.md matches the modules\' ERROR_CODES catalogues', async () => {
  const expected = await renderErrorDocs();
  const actual = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
  assert.equal(actual, expected, 'docs/errors.md is stale: run `npx tsc && node scripts/gen-error-docs.mjs`');
});

test('error codes are unique across modules and prefixed by their module', async () => {
  const seen = new Map<string, string>();
  const catalogues = await loadCatalogues();
  assert.ok(catalogues.length > 0, 'no ERROR_CODES catalogue found under dist/src');
  for (const { module, codes } of catalogues) {
    for (const [code, meaning] of Object.entries(codes)) {
      assert.match(code, /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/, `${module}: ${code} is not UPPER_SNAKE with a prefix`);
      assert.ok(meaning.trim().length > 0, `${module}: ${code} has no meaning`);
      assert.ok(!seen.has(code), `${code} defined in both ${seen.get(code)} and ${module}`);
      seen.set(code, module);
    }
  }
});
