// Unknown machines: MACs that tried to boot but are not clients, with an
// adopt form for each (image, mode, name). Refreshed when a boot event of a
// MAC that is not a client arrives, or a client is added elsewhere.

import { seg } from '../api.js';
import { h, select, table } from '../dom.js';
import { formatTime } from '../format.js';
import { outcome, runAction } from './common.js';

export function mountUnknown(ctx) {
  const result = outcome();
  const holder = h('div', { class: 'table-wrap' });
  ctx.main.append(
    h('h1', { tabindex: '-1' }, 'Unknown machines'),
    h('p', null, 'Machines that asked this server for a boot but are not clients. Adopt one to make it a client: it boots the chosen image from its next try.'),
    result, holder);
  let known = new Set();

  async function refresh() {
    const [machines, images, clients] = await Promise.all([ctx.api.get('/unknown-machines'), ctx.api.get('/images'), ctx.api.get('/clients')]);
    known = new Set(clients.map((c) => c.mac));
    if (machines.length === 0) {
      holder.replaceChildren(h('p', null, 'No unknown machine has tried to boot.'));
      return;
    }
    const bootable = images.filter((i) => i.currentVersion !== null);
    holder.replaceChildren(table('Machines that tried to boot, most recently seen first',
      ['MAC', 'Architecture', 'First seen', 'Last seen', 'Tries', 'Adopt'],
      machines.map((m) => h('tr', { dataset: { mac: m.mac } },
        h('th', { scope: 'row' }, h('span', { class: 'mac' }, m.mac)),
        h('td', null, m.arch ?? '—'),
        h('td', null, formatTime(m.firstSeenAt)),
        h('td', null, formatTime(m.lastSeenAt)),
        h('td', null, String(m.attempts)),
        h('td', null, adoptForm(m, images, bootable)))),
      { class: 'unknown' }));
  }

  function adoptForm(m, images, bootable) {
    if (images.length === 0) return h('span', { class: 'muted' }, 'import an image first');
    const id = m.mac.replace(/:/g, '');
    const image = select(images.map((i) => ({ value: i.name, label: i.currentVersion === null ? `${i.name} (no published version)` : i.name })), bootable[0]?.name ?? images[0].name, { id: `img-${id}` });
    const mode = select([{ value: 'ephemeral', label: 'ephemeral' }, { value: 'persistent', label: 'persistent' }], 'ephemeral', { id: `mode-${id}` });
    const name = h('input', { type: 'text', id: `name-${id}`, maxlength: '63', size: '12', autocomplete: 'off', pattern: '[A-Za-z0-9][A-Za-z0-9._\\-]*' });
    // The visible labels are short; each names the machine for assistive technology.
    const label = (forId, text) => h('label', { for: forId }, h('span', { class: 'visually-hidden' }, `${m.mac}: `), text);
    const form = h('form', { class: 'adopt' },
      label(image.id, 'Image'), image,
      label(mode.id, 'Mode'), mode,
      label(name.id, 'Name (optional)'), name,
      h('button', { type: 'submit', 'aria-label': `Adopt ${m.mac}` }, 'Adopt'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const body = { mac: m.mac, image: image.value, mode: mode.value };
      if (name.value.trim()) body.name = name.value.trim();
      void runAction(form, result, `Adopting ${m.mac}`, () => ctx.api.post('/clients', body),
        (c) => `Adopted ${c.mac} as a ${c.mode} client of ${c.image}; it boots from its next try.`, refresh);
    });
    return form;
  }

  return {
    title: 'Unknown machines',
    refresh,
    onEvent: (ev) => (ev.type === 'boot-event' && !known.has(ev.data?.mac)) || (ev.type === 'client' && ev.data?.change !== 'changed'),
  };
}
