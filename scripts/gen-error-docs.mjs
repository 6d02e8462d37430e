#!/usr/bin/env node
// Writes docs/errors.md from the ERROR_CODES catalogue of every module
// (dist/src/**/errors.js, so run the build first). The test
// test/integration/error-catalogue.test.ts fails when the two differ.
import { writeFileSync } from 'node:fs';
import { renderErrorDocs } from '../dist/test/helpers/error-catalogue.js';

const text = await renderErrorDocs();
writeFileSync(new URL('../docs/errors.md', import.meta.url), text);
console.error('wrote docs/errors.md');
