/**
 * Rules over catalogue records that more than one module applies: the
 * catalogue when it starts a boot, the boot service when it says what a
 * client will boot. One definition, so the two never disagree.
 */
import type { ClientRecord, OverlayRecord } from './types.js';

/**
 * Whether a client's next boot keeps its overlay. A draft lives only while
 * its client is in maintenance, and in maintenance only a draft is kept
 * (an earlier overlay must not become part of the next version); otherwise
 * a persistent client keeps its overlay and an ephemeral one starts clean.
 */
export function keepsOverlay(client: Pick<ClientRecord, 'maintenance' | 'mode'>, overlay: Pick<OverlayRecord, 'draft'>): boolean {
  return client.maintenance ? overlay.draft : !overlay.draft && client.mode === 'persistent';
}
