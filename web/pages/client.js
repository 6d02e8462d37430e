// One client: what it is and runs, its boot timeline (each step's time and
// the time since power-on) and its actions: reset the overlay, maintenance
// on/off, commit the draft, change image/pin/mode/name/quota, delete.

import { seg } from '../api.js';
import { badge, field, fill, h, select, table } from '../dom.js';
import { formatBytes, formatDuration, formatTime } from '../format.js';
import { bootFromApi, clientStatus, currentBoot, furthestStep, milestones, stepLabel } from '../model.js';
import { imageView, ioView, modeView, outcome, overlayView, runAction, stateView } from './common.js';

/** "booting for 12 s" and the I/O rates change without events. */
const POLL_MS = 5000;
/** Earlier boots shown under the current one. */
const EARLIER_BOOTS = 5;
const MiB = 1024 * 1024;

export function mountClient(ctx, given) {
  // The API takes any spelling of a MAC; events name it in its one form.
  const text = String(given).toLowerCase();
  const mac = /^[0-9a-f]{2}(?:[:-]?[0-9a-f]{2}){5}$/.test(text) ? text.replace(/[:-]/g, '').match(/../g).join(':') : String(given);
  const heading = h('h1', { tabindex: '-1' }, `Client ${mac}`);
  const summary = h('section', { 'aria-labelledby': 'summary-h' });
  const timeline = h('section', { 'aria-labelledby': 'timeline-h' });
  const actions = h('section', { 'aria-labelledby': 'actions-h' });
  const result = outcome();
  ctx.main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/clients' }, 'Clients'), ' › ', mac), heading, result, summary, timeline, actions);
  let actionsKey = null;
  let gone = false;

  async function refresh() {
    if (gone) return;
    let client;
    try {
      client = await ctx.api.get(`/clients/${seg(mac)}`);
    } catch (err) {
      if (err.status !== 404) throw err;
      gone = true;
      fill(heading, `Client ${mac}`);
      summary.replaceChildren(h('p', { role: 'status' }, `There is no client ${mac} (any more). `, h('a', { href: '#/clients' }, 'Back to the clients.')));
      timeline.replaceChildren();
      actions.replaceChildren();
      return;
    }
    const [tl, overlay] = await Promise.all([
      ctx.api.get(`/clients/${seg(mac)}/timeline?limit=500`),
      ctx.api.get(`/clients/${seg(client.mac)}/overlay`).catch((err) => {
        if (err.status === 404) return null;
        throw err;
      }),
    ]);
    const boots = tl.boots.map(bootFromApi);
    const now = Date.now();
    const status = clientStatus(client, boots, now);
    fill(heading, client.name ? `Client ${client.name}` : `Client ${client.mac}`);
    renderSummary(client, status, overlay, now);
    renderTimeline(client, boots, status);
    const key = JSON.stringify([client.maintenance, client.image, client.pinnedVersion, client.mode, client.name, client.quotaBytes, client.overlay?.draft ?? null]);
    if (key !== actionsKey) {
      actionsKey = key;
      await renderActions(client);
    }
  }

  function renderSummary(c, status, overlay, now) {
    const row = (term, ...desc) => [h('dt', null, term), h('dd', null, desc)];
    summary.replaceChildren(
      h('h2', { id: 'summary-h' }, 'Summary'),
      h('dl', { class: 'facts' },
        row('MAC', h('span', { class: 'mac' }, c.mac)),
        row('Name', c.name ?? '—'),
        row('State', stateView(status, now)),
        row('Address', c.bootAddress ?? c.lastAddress ?? '—'),
        row('Image', imageView(c)),
        row('Next boot runs', c.targetVersion !== null ? `${c.image} v${c.targetVersion}${c.pinnedVersion !== null ? ' (pinned)' : ' (the current version)'}` : 'nothing: the image has no published version'),
        row('Mode', modeView(c)),
        row('Overlay', overlayView(c.overlay, c.quotaBytes)),
        row('Disk I/O', ioView(overlay?.io ?? null)),
        row('Boot started', formatTime(c.bootStartedAt)),
        row('Last seen', formatTime(c.lastSeenAt)),
      ));
  }

  function renderTimeline(c, boots, status) {
    const cur = currentBoot(c, boots);
    const parts = [h('h2', { id: 'timeline-h' }, 'Boot timeline')];
    if (!cur) {
      parts.push(h('p', null, boots.length ? 'No boot in progress: the client is off, or was reset since its last boot.' : 'This client has not tried to boot yet.'));
    } else {
      parts.push(h('p', null, `Power-on (first request seen) at ${formatTime(new Date(cur.startedMs).toISOString())}. `, stateView(status)));
      parts.push(bootTable('Steps of the current boot', cur, true));
      parts.push(eventList(cur));
    }
    const earlier = boots.filter((b) => b !== cur).slice(-EARLIER_BOOTS).reverse();
    if (earlier.length) {
      parts.push(h('h3', null, 'Earlier boots'));
      for (const b of earlier) {
        const outcomeText = b.up ? `came up in ${formatDuration(upAfter(b))}` : `ended after ${stepLabel(furthestStep(b))}`;
        parts.push(h('details', null,
          h('summary', null, `${formatTime(new Date(b.startedMs).toISOString())}: ${outcomeText}`),
          bootTable('Steps of this boot', b, false)));
      }
    }
    timeline.replaceChildren(...parts);
  }

  function upAfter(b) {
    const m = milestones(b).find((x) => x.key === 'up');
    return m?.sincePowerOnMs ?? b.lastMs - b.startedMs;
  }

  function bootTable(caption, boot, current) {
    const words = { done: 'done', current: 'latest step', pending: 'not yet', skipped: 'skipped' };
    return table(caption, ['Step', 'Status', 'Time', 'Since power-on', 'Detail'],
      milestones(boot).map((m) => h('tr', { dataset: { milestone: m.key, status: m.status }, class: current && m.status === 'current' ? 'current' : null },
        h('th', { scope: 'row' }, m.label),
        h('td', null, badge(words[m.status], m.status === 'current' ? 'booting' : m.status === 'done' ? 'up' : 'off')),
        h('td', null, m.timeMs === null ? '—' : h('time', { datetime: new Date(m.timeMs).toISOString() }, formatTime(new Date(m.timeMs).toISOString()))),
        h('td', null, m.sincePowerOnMs === null ? '—' : `+${formatDuration(m.sincePowerOnMs)}`),
        h('td', null, milestoneDetail(m)),
      )),
      { class: 'timeline' });
  }

  function eventList(boot) {
    return h('details', null,
      h('summary', null, `All ${boot.events.length} events of this boot`),
      table('Events of the current boot, oldest first', ['Time', 'Step', 'Detail'],
        boot.events.map((e) => h('tr', null,
          h('td', null, formatTime(e.timeAt)),
          h('td', null, stepLabel(e.step)),
          h('td', null, detailText(e.detail))))));
  }

  async function renderActions(c) {
    const images = await ctx.api.get('/images');
    const scope = h('div', { class: 'actions' });
    const say = (what, fn, done) => runAction(scope, result, what, fn, done, async () => {
      actionsKey = null;
      await refresh();
    });

    // Reset
    const reset = h('button', { type: 'button', class: 'danger' }, 'Reset overlay');
    reset.addEventListener('click', () => {
      if (!confirm(`Discard the overlay of ${c.mac}? Everything it wrote is lost and its current boot ends.`)) return;
      void say('Reset', () => ctx.api.post(`/clients/${seg(c.mac)}/reset`),
        (r) => `Reset: ${r.discarded ? 'its overlay was discarded' : 'it had no overlay'}; its next boot starts clean.`);
    });

    // Maintenance
    const maint = h('button', { type: 'button' }, c.maintenance ? 'Turn maintenance off' : 'Turn maintenance on');
    maint.addEventListener('click', () => void say(c.maintenance ? 'Maintenance off' : 'Maintenance on',
      () => ctx.api.post(`/clients/${seg(c.mac)}/maintenance`, { on: !c.maintenance }),
      (r) => (r.maintenance ? 'Maintenance is on: its next boot writes a draft of the next version.' : 'Maintenance is off: the draft is discarded at its next boot.')));

    // Commit
    let commit = null;
    if (c.maintenance) {
      const publish = h('input', { type: 'checkbox', id: 'commit-publish' });
      const button = h('button', { type: 'button' }, 'Commit the draft as a new version');
      button.addEventListener('click', () => void say('Commit', () => ctx.api.post(`/clients/${seg(c.mac)}/commit`, { publish: publish.checked }),
        (v) => `Committed: ${v.image} version ${v.version}${v.published ? ', published' : ', held (publish it on the Images page)'}.`));
      commit = h('div', { class: 'action' },
        h('h3', null, 'Commit'),
        h('p', null, c.overlay?.draft ? 'Shut the client down first: its file systems must be clean.' : 'The client has no draft yet: boot it once in maintenance.'),
        h('div', { class: 'check' }, publish, h('label', { for: 'commit-publish' }, 'Publish the new version at once')),
        button);
    }

    // Settings
    const form = settingsForm(c, images, say);

    // Delete
    const del = h('button', { type: 'button', class: 'danger' }, 'Delete client');
    del.addEventListener('click', () => {
      if (!confirm(`Delete the client ${c.mac} and its overlay?`)) return;
      void say('Delete', () => ctx.api.del(`/clients/${seg(c.mac)}`), () => `Deleted ${c.mac}.`);
    });

    fill(scope,
      h('div', { class: 'action' }, h('h3', null, 'Overlay'), h('p', null, 'Discard what the client wrote and end its current boot.'), reset),
      h('div', { class: 'action' }, h('h3', null, 'Maintenance'),
        h('p', null, c.maintenance ? 'On: its overlay is a draft of the image\'s next version.' : 'Off. On: its next boot writes a draft that can become the image\'s next version.'), maint),
      commit,
      form,
      h('div', { class: 'action' }, h('h3', null, 'Delete'), del));
    actions.replaceChildren(h('h2', { id: 'actions-h' }, 'Actions'), scope);
  }

  function settingsForm(c, images, say) {
    const imageSel = select(images.map((i) => ({ value: i.name, label: i.name })), c.image, { name: 'image' });
    const pinSel = h('select', { name: 'pinnedVersion' });
    const modeSel = select([{ value: 'ephemeral', label: 'ephemeral' }, { value: 'persistent', label: 'persistent' }], c.mode, { name: 'mode' });
    const name = h('input', { type: 'text', name: 'name', value: c.name ?? '', maxlength: '63', pattern: '[A-Za-z0-9][A-Za-z0-9._\\-]*', autocomplete: 'off' });
    const quotaShown = c.quotaBytes ? String(Math.max(1, Math.round(c.quotaBytes / MiB))) : '';
    const quota = h('input', { type: 'number', name: 'quota', min: '1', step: '1', value: quotaShown });
    const fillPins = async () => {
      const img = imageSel.value;
      let versions = [];
      try {
        versions = await ctx.api.get(`/images/${seg(img)}/versions`);
      } catch { /* shown as no versions */ }
      const pinned = img === c.image ? c.pinnedVersion : null;
      fill(pinSel, h('option', { value: '', selected: pinned === null }, 'follow the current version'),
        versions.map((v) => h('option', { value: String(v.version), selected: v.version === pinned }, `v${v.version}${v.published ? '' : ' (held)'}`)));
    };
    imageSel.addEventListener('change', () => void fillPins());
    void fillPins();
    const form = h('form', { class: 'action settings' },
      h('h3', null, 'Settings'),
      h('p', null, 'Changes apply from its next boot.'),
      field('Image', imageSel),
      field('Version', pinSel, 'Pin a version, or follow the image\'s current one.'),
      field('Mode', modeSel, 'Ephemeral starts clean at every boot; persistent keeps its writes.'),
      field('Name', name, 'Letters, digits, dot, dash, underscore; empty for none.'),
      field('Overlay quota (MiB)', quota, 'Empty for no limit.'),
      h('button', { type: 'submit' }, 'Save settings'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const changes = {};
      const pin = pinSel.value === '' ? null : Number(pinSel.value);
      if (imageSel.value !== c.image) {
        // A new image drops the pin unless one is chosen with it.
        changes.image = imageSel.value;
        if (pin !== null) changes.pinnedVersion = pin;
      } else if (pin !== c.pinnedVersion) {
        changes.pinnedVersion = pin;
      }
      if (modeSel.value !== c.mode) changes.mode = modeSel.value;
      const n = name.value.trim() === '' ? null : name.value.trim();
      if (n !== c.name) changes.name = n;
      if (quota.value.trim() !== quotaShown) changes.quotaBytes = quota.value.trim() === '' ? null : Math.round(Number(quota.value) * MiB);
      if (Object.keys(changes).length === 0) {
        fill(result, 'Nothing to change.');
        return;
      }
      void say('Save settings', () => ctx.api.patch(`/clients/${seg(c.mac)}`, changes),
        () => `Saved: ${Object.keys(changes).join(', ')} changed; they apply from its next boot.`);
    });
    return form;
  }

  return {
    title: `Client ${mac}`,
    refresh,
    pollMs: POLL_MS,
    onEvent: (ev) => ev.data?.mac === mac,
  };
}

function milestoneDetail(m) {
  if (m.count === 0) return '';
  const first = m.events[0];
  const parts = [];
  if (m.key === 'dhcp') parts.push(m.events.map((e) => stepLabel(e.step).replace('DHCP ', '')).join(', '));
  const d = first.detail ?? {};
  if (d.address) parts.push(`from ${d.address}`);
  if (m.key === 'tftp' && d.file) parts.push(String(d.file));
  if (m.key === 'script' && d.image) parts.push(`${d.image} v${d.version}${d.overlayReset ? ', overlay reset' : ''}`);
  if (m.key === 'script' && d.notReady) parts.push(`not ready: ${d.notReady}`);
  if ((m.key === 'kernel' || m.key === 'initrd') && typeof d.size === 'number') parts.push(formatBytes(d.size));
  if (m.key === 'root' && d.image) parts.push(`${d.image} v${d.version}`);
  if (m.count > 1 && m.key !== 'dhcp') parts.push(`${m.count} times`);
  return parts.join('; ');
}

function detailText(detail) {
  if (!detail || typeof detail !== 'object') return '';
  const text = Object.entries(detail).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join('; ');
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}
