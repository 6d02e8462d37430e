// Images: each image's versions with their kernels, which clients run or
// pin each, and the actions publish, make current (rollback) and commit a
// maintenance client's draft. The stream sends no image events: the page
// refreshes on client changes (which is when "runs" moves), on image changes, and every 30 s.

import { seg } from '../api.js';
import { badge, fill, h, table } from '../dom.js';
import { formatBytes, formatTime } from '../format.js';
import { outcome, runAction } from './common.js';

const POLL_MS = 30_000;

export function mountImages(ctx, focusImage) {
  const result = outcome();
  const holder = h('div');
  ctx.main.append(h('h1', { tabindex: '-1' }, 'Images'), result, holder);
  let scrolled = false;

  async function refresh() {
    const [images, clients] = await Promise.all([ctx.api.get('/images'), ctx.api.get('/clients')]);
    const details = await Promise.all(images.map((i) => ctx.api.get(`/images/${seg(i.name)}`)));
    if (images.length === 0) {
      holder.replaceChildren(h('p', null, 'No images yet. Import one with diskless image import.'));
      return;
    }
    holder.replaceChildren(...details.map((d) => imageSection(d, clients)));
    if (focusImage && !scrolled) {
      scrolled = true;
      document.getElementById(sectionId(focusImage))?.scrollIntoView();
    }
  }

  const act = (scope, what, fn, done) => runAction(scope, result, what, fn, done, refresh);

  function imageSection(img, clients) {
    const scope = h('section', { id: sectionId(img.name), class: 'image', 'aria-labelledby': `${sectionId(img.name)}-h`, dataset: { image: img.name } });
    const published = img.versions.filter((v) => v.published).map((v) => v.version);
    const older = published.filter((v) => img.currentVersion !== null && v < img.currentVersion);
    const rollback = h('button', { type: 'button', disabled: older.length === 0 }, 'Roll back to the previous version');
    rollback.addEventListener('click', () => {
      if (!confirm(`Make ${img.name} version ${older[older.length - 1]} current again? Clients boot it from their next boot on.`)) return;
      void act(scope, `Rollback of ${img.name}`, () => ctx.api.post(`/images/${seg(img.name)}/rollback`, {}),
        (r) => `${img.name}: current version ${r.from ?? 'none'} → ${r.to}. Clients boot it from their next boot on.`);
    });

    const rows = img.versions.slice().reverse().map((v) => {
      const runs = clients.filter((c) => c.bootImage === img.name && c.bootVersion === v.version && c.state !== 'new');
      const pins = clients.filter((c) => c.image === img.name && c.pinnedVersion === v.version);
      const info = v.bootInfo ?? {};
      const state = v.version === img.currentVersion ? badge('current', 'up') : v.published ? badge('published', 'info') : badge('held', 'warn');
      const buttons = [];
      if (!v.published) {
        const b = h('button', { type: 'button', 'aria-label': `Publish ${img.name} version ${v.version}` }, 'Publish');
        b.addEventListener('click', () => void act(scope, `Publish of ${img.name} v${v.version}`,
          () => ctx.api.post(`/images/${seg(img.name)}/versions/${v.version}/publish`),
          () => `${img.name} version ${v.version} is published and current: clients boot it from their next boot on.`));
        buttons.push(b);
      } else if (v.version !== img.currentVersion) {
        const b = h('button', { type: 'button', 'aria-label': `Make ${img.name} version ${v.version} current` }, 'Make current');
        b.addEventListener('click', () => {
          if (!confirm(`Make ${img.name} version ${v.version} current? Clients boot it from their next boot on.`)) return;
          void act(scope, `Rollback of ${img.name} to v${v.version}`,
            () => ctx.api.post(`/images/${seg(img.name)}/rollback`, { version: v.version }),
            (r) => `${img.name}: current version ${r.from ?? 'none'} → ${r.to}.`);
        });
        buttons.push(b);
      }
      return h('tr', { dataset: { version: String(v.version) } },
        h('th', { scope: 'row' }, `v${v.version}`),
        h('td', null, state),
        h('td', null, formatTime(v.createdAt)),
        h('td', null, formatBytes(v.size)),
        h('td', null, info.kernelVersion ?? h('span', { class: 'muted' }, 'not bootable (no kernel extracted)')),
        h('td', null, kernelList(info)),
        h('td', null, info.initramfsFlavour ?? '—'),
        h('td', null, typeof info.os === 'string' ? info.os : '—'),
        h('td', null, clientList(runs)),
        h('td', null, clientList(pins)),
        h('td', null, buttons),
      );
    });

    const drafts = clients.filter((c) => c.image === img.name && c.maintenance);
    const children = [
      h('h2', { id: `${sectionId(img.name)}-h` }, img.name),
      h('p', null, img.currentVersion !== null ? `Current version: v${img.currentVersion}. ` : 'No published version: clients of this image cannot boot. ',
        img.description ?? ''),
      h('div', { class: 'buttons' }, rollback),
      h('div', { class: 'table-wrap' }, table(`Versions of ${img.name}, newest first`,
        ['Version', 'State', 'Created', 'Size', 'Kernel booted', 'Kernels in the image', 'Initramfs', 'OS', 'Running on', 'Pinned by', 'Actions'], rows, { class: 'versions' })),
    ];
    if (drafts.length) {
      children.push(h('h3', null, 'Maintenance clients (drafts of the next version)'));
      children.push(h('ul', { class: 'drafts' }, drafts.map((c) => {
        const publish = h('input', { type: 'checkbox', id: `publish-${c.mac.replace(/:/g, '')}` });
        const b = h('button', { type: 'button', 'aria-label': `Commit the draft of ${c.mac}` }, 'Commit');
        b.addEventListener('click', () => void act(scope, `Commit of ${c.mac}`,
          () => ctx.api.post(`/clients/${seg(c.mac)}/commit`, { publish: publish.checked }),
          (v) => `Committed the draft of ${c.mac} as ${v.image} version ${v.version}${v.published ? ', published' : ', held'}.`));
        return h('li', { dataset: { mac: c.mac } },
          h('a', { href: `#/clients/${encodeURIComponent(c.mac)}`, class: 'mac' }, c.mac), c.name ? ` (${c.name})` : '',
          c.overlay?.draft ? ` — draft on v${c.overlay.version}, ${formatBytes(c.overlay.diskBytes)} ` : ' — no draft yet (boot it once) ',
          h('span', { class: 'check' }, publish, h('label', { for: publish.id }, 'publish')), ' ', b);
      })));
    }
    fill(scope, children);
    return scope;
  }

  return {
    title: 'Images',
    refresh,
    pollMs: POLL_MS,
    onEvent: (ev) => ev.type === 'client' || ev.type === 'image',
  };
}

function sectionId(name) {
  return `image-${String(name).replace(/[^a-z0-9._-]/g, '_')}`;
}

function kernelList(info) {
  const kernels = Array.isArray(info.kernels) ? info.kernels : [];
  if (kernels.length === 0) return '—';
  return h('ul', { class: 'plain' }, kernels.map((k) => h('li', null, String(k))));
}

function clientList(clients) {
  if (clients.length === 0) return h('span', { class: 'muted' }, 'none');
  return h('ul', { class: 'plain' }, clients.map((c) => h('li', null, h('a', { href: `#/clients/${encodeURIComponent(c.mac)}`, class: 'mac' }, c.name ?? c.mac))));
}
