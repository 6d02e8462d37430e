/**
 * `diskless client ...`: the machines that boot from this server, what
 * each boots, its overlay, maintenance, and the unknown machines that tried.
 */
import type { ClientView } from '../../app/catalogue.js';
import { notFound } from '../../state/errors.js';
import { CLIENT_MODES, CLIENT_NAME, type ClientChanges, type ClientMode } from '../../state/store.js';
import {
  changeCatalogue, DATA_HELP, DATA_OPTIONS, emit, imageArg, macArg, sizeArg, stringOption, versionArg, withCatalogue,
  type Command, type RunContext,
} from '../command.js';
import { UsageError } from '../errors.js';
import { bytes, fields, table, time } from '../format.js';

function modeOption(ctx: RunContext): ClientMode | undefined {
  const mode = stringOption(ctx, 'mode');
  if (mode !== undefined && !(CLIENT_MODES as readonly string[]).includes(mode)) throw new UsageError(`--mode must be ${CLIENT_MODES.join(' or ')}, got "${mode}"`);
  return mode as ClientMode | undefined;
}

function nameOption(ctx: RunContext): string | undefined {
  const name = stringOption(ctx, 'name');
  if (name !== undefined && !CLIENT_NAME.test(name)) throw new UsageError(`--name "${name}": 1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit`);
  return name;
}

function clientLines(c: ClientView): string[] {
  const quota = c.quotaBytes === null ? '' : ` of ${bytes(c.quotaBytes)} quota`;
  return fields([
    ['mac', c.mac],
    ['name', c.name ?? '-'],
    ['image', c.image + (c.pinnedVersion !== null ? ` (pinned to version ${c.pinnedVersion})` : '')],
    ['mode', c.mode + (c.maintenance ? ', maintenance (its overlay is a draft of the next version)' : '')],
    ['state', c.state],
    ['boot', c.bootId ? `${c.bootId}, started ${time(c.bootStartedMs)}, ${c.bootImage} version ${c.bootVersion}` : '-'],
    ['next boot', c.targetVersion === null ? '- (no version to boot)' : `${c.image} version ${c.targetVersion}${c.stale ? ' (STALE: the running boot has another version)' : ''}`],
    ['export', c.exportName ?? '- (none until the client boots, or `diskless client new-boot`)'],
    ['bound to', c.bootAddress ?? '-'],
    ['last address', c.lastAddress ? `${c.lastAddress} at ${time(c.lastSeenMs)}` : '-'],
    ['overlay', c.overlay ? `${c.overlay.path} (${c.overlay.image} version ${c.overlay.version}${c.overlay.draft ? ', draft' : ''}, ${bytes(c.overlay.diskBytes)} on disk${quota})` : '-'],
  ]);
}

const clientAdd: Command = {
  path: ['client', 'add'],
  usage: 'client add MAC --image NAME [--mode ephemeral|persistent] [--name NAME] [--pin VERSION] [--quota SIZE]',
  summary: 'Add a client machine (or adopt an unknown one)',
  help: 'ephemeral (the default): the client\'s disk starts clean at every boot. persistent: its writes are kept across boots.',
  options: { ...DATA_OPTIONS, image: { type: 'string' }, mode: { type: 'string' }, name: { type: 'string' }, pin: { type: 'string' }, quota: { type: 'string' } },
  optionHelp: [
    ['--image NAME', 'the image it boots (required)'],
    ['--mode MODE', 'ephemeral (default) or persistent'],
    ['--name NAME', 'a name for it, e.g. pc-01 (may become its host name)'],
    ['--pin VERSION', 'boot this version of the image instead of the current one'],
    ['--quota SIZE', 'most space its overlay may take, e.g. 10G (writes beyond get ENOSPC)'],
    ...DATA_HELP,
  ],
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const image = stringOption(ctx, 'image');
    if (image === undefined) throw new UsageError('--image NAME is required', clientAdd.usage);
    imageArg(image);
    const mode = modeOption(ctx) ?? 'ephemeral';
    const name = nameOption(ctx);
    const pin = stringOption(ctx, 'pin');
    const quota = stringOption(ctx, 'quota');
    const c = await changeCatalogue(ctx, (cat) => {
      cat.addClient({ mac, image, mode, name: name ?? null, pinnedVersion: pin === undefined ? null : versionArg(pin, '--pin') });
      return quota === undefined ? cat.showClient(mac) : cat.updateClient(mac, { quotaBytes: sizeArg(quota, '--quota') });
    });
    return emit(ctx, c, () => [`added client ${c.mac}${c.name ? ` (${c.name})` : ''}: ${c.image}, ${c.mode}`]);
  },
};

const clientSet: Command = {
  path: ['client', 'set'],
  usage: 'client set MAC [--image NAME] [--pin VERSION | --unpin] [--mode MODE] [--name NAME | --no-name] [--quota SIZE | --no-quota]',
  summary: 'Change what a client boots next time, its name or its overlay quota',
  help: 'The running boot is not touched. A persistent client\'s overlay stays on its version until `diskless client reset`.',
  options: {
    ...DATA_OPTIONS, image: { type: 'string' }, pin: { type: 'string' }, unpin: { type: 'boolean' }, mode: { type: 'string' },
    name: { type: 'string' }, 'no-name': { type: 'boolean' }, quota: { type: 'string' }, 'no-quota': { type: 'boolean' },
  },
  optionHelp: [
    ['--image NAME', 'boot this image (drops a pin unless --pin is given too)'],
    ['--pin VERSION', 'boot this version (may be a held one: a test group)'],
    ['--unpin', 'boot the image\'s current version'],
    ['--mode MODE', 'ephemeral or persistent'],
    ['--name NAME', 'rename it'], ['--no-name', 'remove its name'],
    ['--quota SIZE', 'most space its overlay may take, e.g. 10G'], ['--no-quota', 'no limit'],
    ...DATA_HELP,
  ],
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const changes: ClientChanges = {};
    const image = stringOption(ctx, 'image');
    if (image !== undefined) changes.image = imageArg(image);
    const pin = stringOption(ctx, 'pin');
    if (pin !== undefined && ctx.values.unpin === true) throw new UsageError('--pin and --unpin do not go together');
    if (pin !== undefined) changes.pinnedVersion = versionArg(pin, '--pin');
    if (ctx.values.unpin === true) changes.pinnedVersion = null;
    const mode = modeOption(ctx);
    if (mode !== undefined) changes.mode = mode;
    const name = nameOption(ctx);
    if (name !== undefined && ctx.values['no-name'] === true) throw new UsageError('--name and --no-name do not go together');
    if (name !== undefined) changes.name = name;
    if (ctx.values['no-name'] === true) changes.name = null;
    const quota = stringOption(ctx, 'quota');
    if (quota !== undefined && ctx.values['no-quota'] === true) throw new UsageError('--quota and --no-quota do not go together');
    if (quota !== undefined) changes.quotaBytes = sizeArg(quota, '--quota');
    if (ctx.values['no-quota'] === true) changes.quotaBytes = null;
    if (Object.keys(changes).length === 0) throw new UsageError('nothing to change: give at least one option', clientSet.usage);
    const c = await changeCatalogue(ctx, (cat) => cat.updateClient(mac, changes));
    return emit(ctx, c, () => clientLines(c));
  },
};

const clientList: Command = {
  path: ['client', 'list'],
  usage: 'client list',
  summary: 'List the clients',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 0, max: 0, names: [] },
  json: true,
  async run(ctx) {
    const clients = await withCatalogue(ctx, false, (c) => c?.listClients() ?? []);
    return emit(ctx, clients, () =>
      clients.length === 0 ? ['no clients (add one with `diskless client add MAC --image NAME`)'] :
        table(['MAC', 'NAME', 'IMAGE', 'MODE', 'STATE', 'BOOTED', 'ADDRESS', 'OVERLAY'], clients.map((c) => [
          c.mac, c.name ?? '-', c.image + (c.pinnedVersion !== null ? `@${c.pinnedVersion}` : ''), c.mode + (c.maintenance ? '+maint' : ''), c.state,
          c.bootVersion === null ? '-' : `${c.bootImage}@${c.bootVersion}${c.stale ? ' (stale)' : ''}`, c.lastAddress ?? '-',
          c.overlay ? bytes(c.overlay.diskBytes) + (c.quotaBytes !== null ? `/${bytes(c.quotaBytes)}` : '') : '-',
        ])));
  },
};

const clientShow: Command = {
  path: ['client', 'show'],
  usage: 'client show MAC',
  summary: 'Show a client: its boot, its NBD export name, its overlay, its recent boot events',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const shown = await withCatalogue(ctx, false, (c) => {
      if (!c) throw notFound(`no client with MAC ${mac} (the catalogue is empty)`);
      return { ...c.showClient(mac), events: c.store.events.list({ mac, limit: 20 }) };
    });
    return emit(ctx, shown, () => [
      ...clientLines(shown),
      ...(shown.events.length > 0 ? ['', 'recent boot events:', ...shown.events.map((e) => `  ${time(e.timeMs)}  ${e.step}${e.detail ? '  ' + JSON.stringify(e.detail) : ''}`)] : []),
    ]);
  },
};

const clientDelete: Command = {
  path: ['client', 'delete'],
  usage: 'client delete MAC',
  summary: 'Delete a client and its overlay (a running client loses its disk)',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const r = await changeCatalogue(ctx, (c) => c.deleteClient(mac));
    return emit(ctx, r, () => [`deleted client ${r.client.mac}${r.discarded ? ` and its overlay ${r.discarded.dir}` : ''}`]);
  },
};

const clientReset: Command = {
  path: ['client', 'reset'],
  usage: 'client reset MAC',
  summary: 'Discard a client\'s overlay and end its current boot; its next boot starts from a clean image',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const r = await changeCatalogue(ctx, (c) => c.resetClient(mac));
    if (r.busy.length > 0 && !ctx.json) ctx.io.err(`note: ${r.busy.join(', ')} is still open in the running server; it is deleted when released`);
    return emit(ctx, r, () => [
      r.discarded ? `discarded the overlay of ${r.client.mac} (${r.discarded.dir}); its next boot starts clean` : `${r.client.mac} had no overlay; its boot was ended`,
    ]);
  },
};

const clientNewBoot: Command = {
  path: ['client', 'new-boot'],
  usage: 'client new-boot MAC',
  summary: 'Do what a new boot of the client does: a new export name; an ephemeral overlay starts clean',
  help: 'The previous export name stops working. Prints the new export name (the boot script passes it in nbdroot=).',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const { boot, view } = await changeCatalogue(ctx, async (c) => ({ boot: await c.newBoot(mac), view: c.showClient(mac) }));
    return emit(ctx, {
      mac: boot.client.mac, bootId: boot.bootId, exportName: boot.exportName, image: boot.image, version: boot.version,
      overlayReset: boot.overlayReset, pendingVersion: boot.pendingVersion, overlay: view.overlay?.path ?? null,
    }, () => fields([
      ['mac', boot.client.mac],
      ['boot', boot.bootId],
      ['export', boot.exportName],
      ['runs', `${boot.image} version ${boot.version}${boot.pendingVersion !== null ? ` (version ${boot.pendingVersion} waits for \`diskless client reset\`)` : ''}`],
      ['overlay', `${view.overlay?.path ?? '-'}${boot.overlayReset ? ' (new, clean)' : ''}`],
    ]));
  },
};

const clientMaintenance: Command = {
  path: ['client', 'maintenance'],
  usage: 'client maintenance MAC on|off',
  summary: 'Maintenance on: the client\'s next boot writes into a draft of the image\'s next version',
  help: [
    'on: from its next boot the client runs a draft on top of the version it boots, kept across',
    'its reboots. Make the changes on it (install packages...), shut it down, then',
    '`diskless image commit MAC` makes the draft a new version. off: the draft is discarded at',
    'the next boot.',
  ].join('\n'),
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 2, max: 2, names: ['MAC', 'on|off'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const word = ctx.positionals[1]!;
    if (word !== 'on' && word !== 'off') throw new UsageError(`say on or off, not "${word}"`, clientMaintenance.usage);
    const c = await changeCatalogue(ctx, (cat) => cat.setMaintenance(mac, word === 'on'));
    return emit(ctx, c, () => [word === 'on'
      ? `${c.mac} is in maintenance: its next boot starts a draft of ${c.image} (then shut it down and \`diskless image commit ${c.mac}\`)`
      : `${c.mac} left maintenance: its draft is discarded at its next boot`]);
  },
};

const clientUnknown: Command = {
  path: ['client', 'unknown'],
  usage: 'client unknown',
  summary: 'List machines that tried to boot but are not clients (adopt one with `client add`)',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 0, max: 0, names: [] },
  json: true,
  async run(ctx) {
    const machines = await withCatalogue(ctx, false, (c) => c?.store.unknownMachines.list() ?? []);
    return emit(ctx, machines, () => machines.length === 0 ? ['no unknown machines have tried to boot'] :
      table(['MAC', 'ARCH', 'ATTEMPTS', 'FIRST SEEN', 'LAST SEEN'], machines.map((m) => [m.mac, m.arch ?? '-', String(m.attempts), time(m.firstSeenMs), time(m.lastSeenMs)])));
  },
};

export const CLIENT_COMMANDS: readonly Command[] = [
  clientAdd, clientSet, clientList, clientShow, clientDelete, clientReset, clientNewBoot, clientMaintenance, clientUnknown,
];
