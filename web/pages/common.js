// Pieces the pages share: how a client's state, image, overlay and I/O are
// shown, and how an action reports what it did.

import { badge, fill, h } from '../dom.js';
import { formatBytes, formatDuration, formatRate } from '../format.js';

export function stateView(status, now = Date.now()) {
  const since = status.sinceMs !== null && status.sinceMs !== undefined ? formatDuration(Math.max(0, now - status.sinceMs)) : null;
  const words = {
    off: 'off',
    up: since ? `up for ${since}` : 'up',
    booting: since ? `${status.label} (${since} since power-on)` : status.label,
    down: status.reason ? `down: ${status.reason}` : 'down',
  }[status.kind];
  return h('span', { class: 'state', dataset: { state: status.kind, step: status.step ?? '' } }, badge(status.kind, status.kind), ' ', h('span', null, words));
}

/** "deb v2", the pin, and a badge when its running version is not the one it would boot now. */
export function imageView(c) {
  const running = c.bootVersion !== null && c.bootVersion !== undefined;
  const parts = [h('a', { href: `#/images/${encodeURIComponent(c.image)}` }, c.image)];
  if (running) {
    const other = c.bootImage && c.bootImage !== c.image ? ` (${c.bootImage})` : '';
    parts.push(` v${c.bootVersion}${other}`);
  } else if (c.targetVersion !== null && c.targetVersion !== undefined) {
    parts.push(h('span', { class: 'muted' }, ` (next boot: v${c.targetVersion})`));
  } else {
    parts.push(h('span', { class: 'muted' }, ' (no version to boot)'));
  }
  if (c.pinnedVersion !== null && c.pinnedVersion !== undefined) parts.push(' ', badge(`pinned v${c.pinnedVersion}`, 'info'));
  if (c.stale) {
    parts.push(' ', badge('stale', 'warn', `runs v${c.bootVersion}; its next boot runs v${c.targetVersion}`),
      h('span', { class: 'visually-hidden' }, `: runs version ${c.bootVersion}, its next boot runs version ${c.targetVersion}`));
  }
  return h('span', { class: 'image' }, parts);
}

export function modeView(c) {
  return h('span', null, c.mode, c.maintenance ? [' ', badge('maintenance', 'info', 'its overlay is a draft of the image\'s next version')] : null);
}

export function overlayView(overlay, quotaBytes) {
  if (!overlay) return h('span', { class: 'muted' }, 'none');
  const used = overlay.diskBytes ?? 0;
  if (quotaBytes === null || quotaBytes === undefined) return h('span', null, `${formatBytes(used)} `, h('span', { class: 'muted' }, '(no quota)'));
  const pct = Math.min(100, Math.round((used / quotaBytes) * 100));
  return h('span', { class: 'overlay' },
    h('meter', { min: '0', max: String(quotaBytes), value: String(Math.min(used, quotaBytes)), high: String(quotaBytes * 0.9), optimum: '0', 'aria-label': `overlay ${pct}% of its quota` }),
    ` ${formatBytes(used)} of ${formatBytes(quotaBytes)} (${pct}%)`);
}

export function ioView(io) {
  if (!io) return h('span', { class: 'muted' }, '—');
  return h('span', { class: 'io' }, `read ${formatRate(io.readBps)}, write ${formatRate(io.writeBps)}`);
}

/**
 * Runs an action: disables the buttons of `scope` meanwhile, then says
 * what happened in `out` (a polite status, or an alert with the API's
 * message; `done(result)` words a success). `after()` runs before a
 * success is announced (the page reads the server again), so what the
 * message says is already on the page. Returns the result, or undefined
 * when refused.
 */
export async function runAction(scope, out, what, fn, done, after) {
  const buttons = [...scope.querySelectorAll('button, input, select')].filter((b) => !b.disabled);
  for (const b of buttons) b.disabled = true;
  out.removeAttribute('role');
  fill(out, `${what}…`);
  out.className = 'outcome';
  try {
    const result = await fn();
    try {
      await after?.();
    } catch {
      // The next refresh shows the page; the action itself succeeded.
    }
    out.setAttribute('role', 'status');
    out.className = 'outcome ok';
    fill(out, done ? done(result) : `${what}: done.`);
    return result;
  } catch (err) {
    out.setAttribute('role', 'alert');
    out.className = 'outcome error';
    fill(out, `${what} failed: ${err.message}${err.code ? ` (${err.code})` : ''}`);
    return undefined;
  } finally {
    for (const b of buttons) if (b.isConnected) b.disabled = false;
  }
}

/** A region for the outcome of actions. */
export function outcome() {
  return h('p', { class: 'outcome', 'aria-live': 'polite' });
}
