/**
 * Collects the error catalogues of all modules: every compiled
 * `dist/src/<module>/errors.js` exporting ERROR_CODES. docs/errors.md is
 * rendered from them (scripts/gen-error-docs.mjs) and a test keeps it in sync.
 */
import { readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const distSrc = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

export interface Catalogue {
  module: string;
  codes: Record<string, string>;
}

function findErrorModules(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...findErrorModules(p));
    else if (name === 'errors.js') out.push(p);
  }
  return out.sort();
}

export async function loadCatalogues(): Promise<Catalogue[]> {
  const out: Catalogue[] = [];
  for (const file of findErrorModules(distSrc)) {
    const mod = (await import(pathToFileURL(file).href)) as { ERROR_CODES?: Record<string, string> };
    if (!mod.ERROR_CODES) continue;
    out.push({ module: relative(distSrc, dirname(file)), codes: mod.ERROR_CODES });
  }
  return out;
}

export async function renderErrorDocs(): Promise<string> {
  const lines = [
    '# Errors',
    '',
    'Every error diskless reports carries a stable code. Protocol modules map',
    'them to their wire form in one place each (NBD errno and option replies,',
    'TFTP error codes, HTTP status). This page is generated from the modules\'',
    '`ERROR_CODES` catalogues by `scripts/gen-error-docs.mjs`; a test fails when',
    'it is out of date.',
    '',
  ];
  for (const { module, codes } of await loadCatalogues()) {
    lines.push(`## ${module}`, '', '| code | meaning |', '| --- | --- |');
    for (const [code, meaning] of Object.entries(codes)) lines.push(`| \`${code}\` | ${meaning.replace(/\|/g, '\\|')} |`);
    lines.push('');
  }
  return lines.join('\n');
}
