/**
 * A client's boot events grouped by boot, for the dashboard's timeline.
 *
 * The DHCP steps of a boot come before the boot has an id (the id is made
 * when the iPXE script is fetched), so grouping by boot id alone would split
 * every boot in two. A boot is therefore: a run of events that starts at a
 * `dhcp-discover` (or at the first event), and also ends where an event
 * names a boot id other than the one its run already has (a new boot
 * without DHCP, e.g. `diskless client new-boot`, or a script fetched again).
 */
import type { BootEventRecord, BootStep } from '../../state/store.js';

export interface BootGroup {
  bootId: string | null;
  startedMs: number;
  lastMs: number;
  lastStep: BootStep;
  up: boolean;
  events: BootEventRecord[];
}

/** Groups events (in the order recorded, oldest first) into boots, oldest first. */
export function groupByBoot(events: readonly BootEventRecord[]): BootGroup[] {
  const boots: BootGroup[] = [];
  let cur: BootGroup | null = null;
  for (const e of events) {
    const startsNew = cur === null
      || e.step === 'dhcp-discover'
      || (e.bootId !== null && cur.bootId !== null && e.bootId !== cur.bootId);
    if (startsNew) {
      cur = { bootId: e.bootId, startedMs: e.timeMs, lastMs: e.timeMs, lastStep: e.step, up: false, events: [] };
      boots.push(cur);
    }
    const g = cur!;
    g.events.push(e);
    if (g.bootId === null && e.bootId !== null) g.bootId = e.bootId;
    g.startedMs = Math.min(g.startedMs, e.timeMs);
    g.lastMs = Math.max(g.lastMs, e.timeMs);
    g.lastStep = e.step;
    if (e.step === 'os-up') g.up = true;
  }
  return boots;
}
