// Clients: every client with its address, image, mode, state, overlay and
// live I/O. Refreshed on each boot event and client change from the
// stream, and every few seconds for the I/O rates (which are not events).

import { h, table } from '../dom.js';
import { bootsByMac, clientStatus } from '../model.js';
import { imageView, ioView, modeView, overlayView, stateView } from './common.js';

/** I/O rates and "booting for 12 s" change without events. */
const POLL_MS = 5000;
/** The newest events read to work out each client's current boot (the API's maximum). */
const EVENTS_READ = 1000;

export function mountClients(ctx) {
  const summary = h('p', { class: 'summary' });
  const holder = h('div', { class: 'table-wrap' });
  ctx.main.append(
    h('h1', { tabindex: '-1' }, 'Clients'),
    summary,
    holder,
    h('p', { class: 'muted' }, 'Machines that tried to boot but are not clients are under ', h('a', { href: '#/unknown' }, 'Unknown machines'), '.'),
  );

  async function refresh() {
    const [clients, events, overlays] = await Promise.all([
      ctx.api.get('/clients'),
      ctx.api.get(`/events?limit=${EVENTS_READ}`),
      ctx.api.get('/overlays'),
    ]);
    const boots = bootsByMac(events);
    const io = new Map(overlays.map((o) => [o.mac, o.io ?? null]));
    const now = Date.now();
    const rows = clients.map((c) => {
      const status = clientStatus(c, boots.get(c.mac) ?? [], now);
      return { c, status };
    });
    const count = (k) => rows.filter((r) => r.status.kind === k).length;
    summary.textContent = `${clients.length} client${clients.length === 1 ? '' : 's'}: ${count('up')} up, ${count('booting')} booting, ${count('down')} down, ${count('off')} off.`;
    if (clients.length === 0) {
      holder.replaceChildren(h('p', null, 'No clients yet. Adopt a machine that tried to boot (Unknown machines), or add one with diskless client add.'));
      return;
    }
    holder.replaceChildren(table('Clients, their boot state, overlay and disk I/O',
      ['MAC', 'Name', 'Address', 'Image', 'Mode', 'State', 'Overlay', 'I/O'],
      rows.map(({ c, status }) => h('tr', { dataset: { mac: c.mac, state: status.kind } },
        h('th', { scope: 'row' }, h('a', { href: `#/clients/${encodeURIComponent(c.mac)}`, class: 'mac' }, c.mac)),
        h('td', null, c.name ?? h('span', { class: 'muted' }, '—')),
        h('td', null, c.bootAddress ?? c.lastAddress ?? h('span', { class: 'muted' }, '—')),
        h('td', null, imageView(c)),
        h('td', null, modeView(c)),
        h('td', null, stateView(status, now)),
        h('td', null, overlayView(c.overlay, c.quotaBytes)),
        h('td', null, ioView(io.get(c.mac) ?? null)),
      )),
      { class: 'clients' }));
  }

  return {
    title: 'Clients',
    refresh,
    pollMs: POLL_MS,
    onEvent: (ev) => ev.type === 'boot-event' || ev.type === 'client',
  };
}
