/**
 * Headless Chromium for the dashboard tests: Debian's `chromium` package
 * (scripts/packages.txt) driven by playwright-core, which downloads no
 * browser of its own. DISKLESS_CHROMIUM names another binary.
 *
 *   if (!requireChromium(t)) return;
 *   const browser = await launchChromium();
 *   const watch = watchPage(page);  ...  watch.assertClean();
 *   await saveScreenshot(t, page, 'clients');   // test-artifacts/dashboard/clients.png
 *
 * Screenshots are test artifacts (the folder is ignored by git); each saved
 * one is named in the test output as a diagnostic line.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core';
import { requirePeers } from './peers.js';

/** The command (or path) of the browser. */
export const CHROMIUM = process.env.DISKLESS_CHROMIUM ?? 'chromium';

/** Where screenshots go: test-artifacts/dashboard/ at the top of the repository. */
export const SCREENSHOT_DIR = fileURLToPath(new URL('../../../test-artifacts/dashboard/', import.meta.url));

/** Skips (locally) or fails (CI) when the browser is missing. */
export function requireChromium(t: TestContext, ...others: string[]): boolean {
  return requirePeers(t, CHROMIUM, ...others);
}

function executablePath(): string {
  const r = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', CHROMIUM], { encoding: 'utf8' });
  const path = r.stdout.trim();
  if (r.status !== 0 || !path) throw new Error(`${CHROMIUM} not found`);
  return path;
}

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: executablePath(),
    headless: true,
    timeout: 60_000,
    // Shared, small machines: no GPU, no /dev/shm of note.
    args: ['--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
  });
}

export interface PageWatch {
  /** Console errors and uncaught exceptions, except failed loads the test caused on purpose (HTTP 4xx). */
  readonly problems: string[];
  assertClean(): void;
}

/**
 * Collects what would show a broken page: uncaught exceptions, console
 * errors (Content-Security-Policy violations are reported there), and
 * requests that failed outright. "Failed to load resource" lines for HTTP
 * error statuses are not problems: the dashboard gets 401 and 404 answers
 * on purpose and handles them.
 */
export function watchPage(page: Page): PageWatch {
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
  page.on('console', (msg: ConsoleMessage) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(text)) return;
    problems.push(`console: ${text}`);
  });
  page.on('requestfailed', (req) => {
    const failure = req.failure()?.errorText ?? '';
    // Streams the page aborts itself (navigation, log-out) are not failures.
    if (/ERR_ABORTED/.test(failure)) return;
    problems.push(`request failed: ${req.method()} ${req.url()} ${failure}`);
  });
  return {
    problems,
    assertClean() {
      if (problems.length > 0) throw new Error(`the page reported problems:\n${problems.join('\n')}`);
    },
  };
}

/** Saves a full-page PNG under SCREENSHOT_DIR and says so in the test output. */
export async function saveScreenshot(t: TestContext, page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = `${SCREENSHOT_DIR}${name}.png`;
  await page.screenshot({ path, fullPage: true });
  t.diagnostic(`screenshot: ${path}`);
  return path;
}

/** Waits until the element `selector` exists and its text contains `text`; the error names what it saw. */
export async function waitForText(page: Page, selector: string, text: string | RegExp, timeoutMs = 15_000): Promise<string> {
  const source = typeof text === 'string' ? { s: text } : { r: text.source, f: text.flags };
  try {
    const handle = await page.waitForFunction(([sel, want]) => {
      const el = document.querySelector(sel);
      const got = el?.textContent ?? null;
      if (got === null) return false;
      const ok = 's' in want ? got.includes(want.s!) : new RegExp(want.r!, want.f).test(got);
      return ok ? got : false;
    }, [selector, source] as const, { timeout: timeoutMs, polling: 100 });
    return (await handle.jsonValue()) as string;
  } catch (err) {
    const seen = await page.evaluate((sel) => document.querySelector(sel)?.textContent ?? '(no such element)', selector).catch(() => '(page gone)');
    throw new Error(`waited ${timeoutMs} ms for ${selector} to contain ${String(text)}; it holds: ${seen.slice(0, 600)}`, { cause: err });
  }
}

/** Waits until `selector` matches an element with attribute `name` equal to `value`. */
export async function waitForAttribute(page: Page, selector: string, name: string, value: string, timeoutMs = 15_000): Promise<void> {
  try {
    await page.waitForFunction(([sel, n, v]) => document.querySelector(sel)?.getAttribute(n) === v, [selector, name, value] as const, { timeout: timeoutMs, polling: 100 });
  } catch (err) {
    const seen = await page.evaluate(([sel, n]) => {
      const el = document.querySelector(sel);
      return el ? `${n}=${JSON.stringify(el.getAttribute(n))}: ${(el.textContent ?? '').slice(0, 400)}` : '(no such element)';
    }, [selector, name] as const).catch(() => '(page gone)');
    throw new Error(`waited ${timeoutMs} ms for ${selector} to have ${name}="${value}"; saw ${seen}`, { cause: err });
  }
}
