// What the dashboard works out from the API's records: a client's boots,
// the state of its current boot, and the milestones of a boot's timeline.
// Pure functions over the JSON the API returns (times are ISO strings).

import { parseTime } from './format.js';

/** The boot steps the server records (BOOT_STEPS of the catalogue), with their names here. */
export const STEP_LABELS = {
  'dhcp-discover': 'DHCP discover',
  'dhcp-offer': 'DHCP offer',
  'dhcp-ack': 'DHCP ack',
  tftp: 'TFTP',
  script: 'iPXE script',
  kernel: 'kernel',
  initrd: 'initramfs',
  'nbd-connect': 'root connected',
  'os-up': 'OS up',
};

/** The milestones of a boot as the timeline shows them, in order. */
export const MILESTONES = [
  { key: 'dhcp', label: 'DHCP', steps: ['dhcp-discover', 'dhcp-offer', 'dhcp-ack'] },
  { key: 'tftp', label: 'TFTP (iPXE)', steps: ['tftp'] },
  { key: 'script', label: 'iPXE script', steps: ['script'] },
  { key: 'kernel', label: 'Kernel', steps: ['kernel'] },
  { key: 'initrd', label: 'Initramfs', steps: ['initrd'] },
  { key: 'root', label: 'Root connected', steps: ['nbd-connect'] },
  { key: 'up', label: 'OS up', steps: ['os-up'] },
];

/**
 * A boot that has made no progress for this long, and has not come up, is
 * shown as down (stalled at its last step). A Debian guest under software
 * emulation takes about 3 minutes from power-on to up; real hardware far less.
 */
export const BOOT_STALL_MS = 10 * 60_000;

const STEP_ORDER = Object.keys(STEP_LABELS);

/**
 * The furthest step a boot reached. Not simply its last event: a step can
 * repeat later (a DHCP renewal, a TFTP retry, a reconnection of the root).
 */
export function furthestStep(boot) {
  let best = null;
  for (const e of boot.events) if (best === null || STEP_ORDER.indexOf(e.step) > STEP_ORDER.indexOf(best)) best = e.step;
  return best ?? boot.lastStep;
}

export function stepLabel(step) {
  return STEP_LABELS[step] ?? String(step);
}

/**
 * Groups a client's events (oldest first) into boots, oldest first, the way
 * the API's timeline does: a boot starts at a DHCP discover (which comes
 * before the boot has an id) or where an event names another boot id.
 */
export function groupByBoot(events) {
  const boots = [];
  let cur = null;
  for (const e of events) {
    const t = parseTime(e.timeAt) ?? 0;
    const startsNew = cur === null || e.step === 'dhcp-discover' || (e.bootId && cur.bootId && e.bootId !== cur.bootId);
    if (startsNew) {
      cur = { bootId: e.bootId ?? null, startedMs: t, lastMs: t, lastStep: e.step, up: false, events: [] };
      boots.push(cur);
    }
    cur.events.push(e);
    if (cur.bootId === null && e.bootId) cur.bootId = e.bootId;
    cur.startedMs = Math.min(cur.startedMs, t);
    cur.lastMs = Math.max(cur.lastMs, t);
    cur.lastStep = e.step;
    if (e.step === 'os-up') cur.up = true;
  }
  return boots;
}

/** The API's timeline boots ({startedAt, lastAt, ...}) in the form groupByBoot() makes. */
export function bootFromApi(b) {
  return {
    bootId: b.bootId ?? null,
    startedMs: parseTime(b.startedAt) ?? 0,
    lastMs: parseTime(b.lastAt) ?? 0,
    lastStep: b.lastStep,
    up: b.up === true,
    events: b.events ?? [],
  };
}

/**
 * The boot a client is in now, from its boots (oldest first): the last one,
 * when it is the catalogue's current boot (same id) or a power-on that has
 * not reached its script yet (no id, newer than the catalogue's boot and
 * than the client itself: tries from before it was adopted do not count). A
 * boot that the catalogue has ended (reset) or replaced is not current.
 */
export function currentBoot(client, boots) {
  const last = boots[boots.length - 1];
  if (!last) return null;
  if (last.bootId !== null && last.bootId === client.bootId) return last;
  const since = Math.max(parseTime(client.bootStartedAt) ?? 0, parseTime(client.createdAt) ?? 0);
  if (last.bootId === null && last.startedMs >= since) return last;
  return null;
}

/**
 * A client's state: {kind: off|booting|up|down, label, step, sinceMs, reason}.
 *   off      never booted, or reset (no current boot)
 *   booting  its current boot is on its way; `step` is the last one reached
 *   up       its OS reported in
 *   down     its boot stopped: the server could not boot it (the script
 *            said why), or no step for BOOT_STALL_MS before it came up
 */
export function clientStatus(client, boots, now = Date.now()) {
  const boot = currentBoot(client, boots);
  if (boot?.up || (client.state === 'up' && (boot === null || boot.bootId === client.bootId))) {
    const upEvent = boot?.events.find((e) => e.step === 'os-up');
    return { kind: 'up', label: 'up', step: 'os-up', sinceMs: parseTime(upEvent?.timeAt) ?? boot?.lastMs ?? null, reason: null };
  }
  if (boot) {
    const lastEvent = boot.events[boot.events.length - 1];
    const d = lastEvent?.detail ?? null;
    if (lastEvent?.step === 'script' && d && (d.notReady || d.failed)) {
      const reason = d.notReady ? `cannot boot yet: ${d.notReady}` : `the server failed to prepare its boot (${d.failed})`;
      return { kind: 'down', label: 'down', step: 'script', sinceMs: boot.lastMs, reason };
    }
    const step = furthestStep(boot);
    if (now - boot.lastMs > BOOT_STALL_MS) {
      return { kind: 'down', label: 'down', step, sinceMs: boot.lastMs, reason: `stalled after ${stepLabel(step)}` };
    }
    return { kind: 'booting', label: `booting: ${stepLabel(step)}`, step, sinceMs: boot.startedMs, reason: null };
  }
  if (client.state === 'booting') {
    // Its events are older than the ones the dashboard read: the state alone.
    const started = parseTime(client.bootStartedAt);
    if (started !== null && now - started > BOOT_STALL_MS) {
      return { kind: 'down', label: 'down', step: null, sinceMs: started, reason: 'no boot step seen recently' };
    }
    return { kind: 'booting', label: 'booting', step: null, sinceMs: started, reason: null };
  }
  return { kind: 'off', label: 'off', step: null, sinceMs: null, reason: null };
}

/**
 * The milestones of one boot: [{key, label, status: done|current|pending|skipped,
 * timeMs, sincePowerOnMs, count, events}]. A milestone's time is its first
 * event; "since power-on" counts from the boot's first event (a DHCP
 * discover: the nearest the server sees to power-on).
 */
export function milestones(boot) {
  const origin = boot.startedMs;
  const rows = MILESTONES.map((m) => {
    const evs = boot.events.filter((e) => m.steps.includes(e.step));
    const first = evs[0];
    const t = first ? parseTime(first.timeAt) : null;
    return { key: m.key, label: m.label, status: evs.length ? 'done' : 'pending', timeMs: t, sincePowerOnMs: t === null ? null : t - origin, count: evs.length, events: evs };
  });
  let lastDone = -1;
  rows.forEach((r, i) => { if (r.status === 'done') lastDone = i; });
  rows.forEach((r, i) => { if (r.status === 'pending' && i < lastDone) r.status = 'skipped'; });
  if (!boot.up && lastDone >= 0 && lastDone < rows.length - 1) rows[lastDone].status = 'current';
  return rows;
}

/** Events of many clients (oldest first) -> boots by MAC. */
export function bootsByMac(events) {
  const byMac = new Map();
  for (const e of events) {
    let list = byMac.get(e.mac);
    if (!list) byMac.set(e.mac, (list = []));
    list.push(e);
  }
  const out = new Map();
  for (const [mac, list] of byMac) out.set(mac, groupByBoot(list));
  return out;
}
