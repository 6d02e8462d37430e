/**
 * `diskless image ...`: getting images in (add a raw disk, import a VM disk,
 * build from Debian) and managing their versions (publish, roll back,
 * delete, commit a maintenance client's draft).
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Catalogue } from '../../app/catalogue.js';
import { createLogger } from '../../lib/log.js';
import { buildDebianImage, BUILD_DEFAULTS } from '../../images/build-debian.js';
import { importDisk, IMPORT_FORMATS, type ImportFormat } from '../../images/import.js';
import { notFound } from '../../state/errors.js';
import type { ImageVersionRecord } from '../../state/store.js';
import {
  changeCatalogue, DATA_HELP, DATA_OPTIONS, emit, imageArg, interruptSignal, macArg, progressPrinter, stringOption, versionArg, withCatalogue,
  type Command, type RunContext,
} from '../command.js';
import { UsageError } from '../errors.js';
import { bytes, fields, table, time } from '../format.js';

/** Where builds keep debootstrap tarballs and finished disks between runs. */
export const BUILD_CACHE_DIR = '/var/cache/diskless/build';

const PUBLISH_OPTIONS = {
  hold: { type: 'boolean' },
  kernel: { type: 'string' },
} as const;

const PUBLISH_HELP: [string, string][] = [
  ['--hold', 'do not publish: only clients pinned to the version boot it, until `diskless image publish`'],
  ['--kernel VERSION', 'the kernel to boot (default: the image\'s /vmlinuz link, else the newest)'],
];

function importOptions(ctx: RunContext): { publish: boolean; kernel?: string } {
  const kernel = stringOption(ctx, 'kernel');
  return { publish: ctx.values.hold !== true, ...(kernel !== undefined ? { kernel } : {}) };
}

function origin(v: ImageVersionRecord): string {
  const info = (v.bootInfo ?? {}) as Record<string, unknown>;
  return typeof info.origin === 'string' ? info.origin : '-';
}

function added(v: ImageVersionRecord): string[] {
  const info = (v.bootInfo ?? {}) as Record<string, unknown>;
  return [
    `added ${v.image} version ${v.version}: ${bytes(v.size)}, sha256 ${v.sha256}, ${v.published ? 'published' : 'held (pin clients to it, or `diskless image publish`)'}`,
    ...(info.kernelVersion ? [`boots kernel ${String(info.kernelVersion)} with its ${String(info.initramfsFlavour)} initramfs; root ${String(info.rootUuid ?? info.rootDevice)}`] : []),
  ];
}

/** A scratch path inside the data directory (same file system: the version takes it by rename). */
function scratch(c: Catalogue, what: string): string {
  return c.dir.abs(`images/.${what}-${process.pid}-${randomBytes(4).toString('hex')}.raw`);
}

const imageAdd: Command = {
  path: ['image', 'add'],
  usage: 'image add NAME FILE [--hold] [--kernel VERSION] [--raw]',
  summary: 'Add a raw disk file as the next version of an image, ready to boot',
  help: [
    'The disk is copied into the data directory, read-only, with its sha256, and inspected:',
    'its Linux root, its kernels, and whether the chosen kernel\'s initramfs can mount the',
    'root over NBD (if not, the message lists what the client kit must add). The kernel and',
    'initramfs are extracted for the boot service. Nothing is kept if any step fails.',
    '--raw skips the inspection: a data disk clients can open but not boot.',
  ].join('\n'),
  options: { ...DATA_OPTIONS, ...PUBLISH_OPTIONS, raw: { type: 'boolean' } },
  optionHelp: [...PUBLISH_HELP, ['--raw', 'add the bytes only (no boot files); for data disks'], ...DATA_HELP],
  positionals: { min: 2, max: 2, names: ['NAME', 'FILE'] },
  json: true,
  async run(ctx) {
    const name = imageArg(ctx.positionals[0]!);
    const file = resolve(ctx.io.cwd, ctx.positionals[1]!);
    const o = importOptions(ctx);
    if (ctx.values.raw === true && o.kernel !== undefined) throw new UsageError('--raw and --kernel do not go together');
    const v = await changeCatalogue(ctx, (c) => ctx.values.raw === true ? c.addImageVersion(name, file, { publish: o.publish }) : c.importVersion(name, file, o));
    return emit(ctx, v, () => added(v));
  },
};

const imageImport: Command = {
  path: ['image', 'import'],
  usage: 'image import FILE|DEVICE --name NAME [--format FORMAT] [--hold] [--kernel VERSION]',
  summary: 'Import a VM disk (raw, qcow2, vmdk, vdi, vhdx) or a block device as the next version of an image',
  help: 'qemu-img converts it to raw inside the data directory (checked first for corruption, for references to other files and for free space); then it is inspected and added as `image add` does.',
  options: { ...DATA_OPTIONS, ...PUBLISH_OPTIONS, name: { type: 'string' }, format: { type: 'string' } },
  optionHelp: [
    ['--name NAME', 'the image (required; created if new)'],
    ['--format FORMAT', `refuse the source unless it is ${IMPORT_FORMATS.join(', ')}`],
    ...PUBLISH_HELP, ...DATA_HELP,
  ],
  positionals: { min: 1, max: 1, names: ['FILE|DEVICE'] },
  json: true,
  async run(ctx) {
    const name = stringOption(ctx, 'name');
    if (name === undefined) throw new UsageError('--name NAME is required', imageImport.usage);
    imageArg(name);
    const format = stringOption(ctx, 'format');
    if (format !== undefined && !(IMPORT_FORMATS as readonly string[]).includes(format)) throw new UsageError(`--format must be one of ${IMPORT_FORMATS.join(', ')}`);
    const source = resolve(ctx.io.cwd, ctx.positionals[0]!);
    const say = progressPrinter(ctx);
    const stop = interruptSignal();
    try {
      const v = await changeCatalogue(ctx, async (c) => {
        const out = scratch(c, 'import');
        try {
          const r = await importDisk({
            source, outPath: out, signal: stop.signal, inspect: { requireNbd: false },
            ...(format !== undefined ? { format: format as ImportFormat } : {}),
            progress: (p) => say(p.phase, p.percent !== undefined ? `${p.percent.toFixed(0)}%` : p.message),
          });
          say('add', `${r.source.format}, ${bytes(r.source.virtualSize)}`);
          return await c.importVersion(name, out, { ...importOptions(ctx), move: true, extraInfo: { origin: 'import', source: r.source.path, sourceFormat: r.source.format } });
        } finally {
          await rm(out, { force: true });
        }
      });
      return emit(ctx, v, () => added(v));
    } finally {
      stop.dispose();
    }
  },
};

const imageBuild: Command = {
  path: ['image', 'build'],
  usage: 'image build debian [--suite SUITE] [--name NAME] [--size SIZE] [--packages P,Q] [--mirror URL] [--autologin] [--hold]',
  summary: 'Build an image from Debian with debootstrap, ready to boot, and add it as the next version',
  help: [
    'A GPT disk with one ext4 root: the kernel, systemd, the NBD client and the client kit',
    '(initramfs with nbd and NIC drivers, fstab by UUID, no swap or resume on the network',
    'disk, the boot NIC kept up, the unit that reports "OS up"). The debootstrap download and',
    `finished disks are cached in ${BUILD_CACHE_DIR}; a second build of the same inputs is quick.`,
  ].join('\n'),
  options: {
    ...DATA_OPTIONS, hold: { type: 'boolean' }, suite: { type: 'string' }, name: { type: 'string' }, size: { type: 'string' },
    packages: { type: 'string' }, mirror: { type: 'string' }, autologin: { type: 'boolean' }, 'cache-dir': { type: 'string' }, rebuild: { type: 'boolean' },
  },
  optionHelp: [
    ['--suite SUITE', `Debian suite (default ${BUILD_DEFAULTS.suite})`],
    ['--name NAME', 'the image (default: debian-SUITE)'],
    ['--size SIZE', `disk size, e.g. 4G (default ${String(BUILD_DEFAULTS.size)})`],
    ['--packages P,Q', 'more packages to install (comma-separated)'],
    ['--mirror URL', 'Debian mirror (default: this machine\'s apt sources)'],
    ['--autologin', 'log root in on the console without a password (labs, demos)'],
    ['--cache-dir DIR', `download and disk cache (default ${BUILD_CACHE_DIR})`],
    ['--rebuild', 'build even when the cache has this disk'],
    ['--hold', 'do not publish the new version'],
    ...DATA_HELP,
  ],
  positionals: { min: 1, max: 1, names: ['debian'] },
  json: true,
  async run(ctx) {
    if (ctx.positionals[0] !== 'debian') throw new UsageError(`only "debian" images can be built (got "${ctx.positionals[0]}")`, imageBuild.usage);
    const suite = stringOption(ctx, 'suite') ?? BUILD_DEFAULTS.suite;
    const name = imageArg(stringOption(ctx, 'name') ?? `debian-${suite}`);
    const packagesText = stringOption(ctx, 'packages');
    const packages = packagesText === undefined ? [] : packagesText.split(',').map((p) => p.trim()).filter((p) => p !== '');
    const size = stringOption(ctx, 'size');
    const mirror = stringOption(ctx, 'mirror');
    const cacheDir = resolve(ctx.io.cwd, stringOption(ctx, 'cache-dir') ?? BUILD_CACHE_DIR);
    const say = progressPrinter(ctx, 5000);
    const stop = interruptSignal();
    try {
      const v = await changeCatalogue(ctx, async (c) => {
        const out = scratch(c, 'build');
        try {
          const r = await buildDebianImage({
            suite, packages, outPath: out, cacheDir, workDir: join(c.dir.root, 'build'), signal: stop.signal,
            autologin: ctx.values.autologin === true, rebuild: ctx.values.rebuild === true,
            ...(size !== undefined ? { size } : {}), ...(mirror !== undefined ? { mirror } : {}),
            logger: createLogger({ level: 'warn' }),
            progress: (p) => say(`[${p.index}/${p.total}] ${p.step} ${p.state}`, p.message),
          });
          say('add', `${r.cached ? 'from the cache' : 'built'}: Debian ${r.suite}, ${bytes(r.size)}`);
          return await c.importVersion(name, out, {
            publish: ctx.values.hold !== true, move: true,
            extraInfo: { origin: 'build', suite: r.suite, packages: r.packages, buildKey: r.cacheKey },
          });
        } finally {
          await rm(out, { force: true });
        }
      });
      return emit(ctx, v, () => added(v));
    } finally {
      stop.dispose();
    }
  },
};

const imageList: Command = {
  path: ['image', 'list'],
  usage: 'image list',
  summary: 'List the images',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 0, max: 0, names: [] },
  json: true,
  async run(ctx) {
    const images = await withCatalogue(ctx, false, (c) => c?.listImages() ?? []);
    return emit(ctx, images, () =>
      images.length === 0 ? ['no images (add one with `diskless image add NAME FILE`, `image import` or `image build debian`)'] :
        table(['NAME', 'CURRENT', 'VERSIONS', 'SIZE', 'CREATED'], images.map((i) => [i.name, i.currentVersion === null ? '-' : String(i.currentVersion), String(i.versions), bytes(i.size), time(i.createdMs)])));
  },
};

const imageShow: Command = {
  path: ['image', 'show'],
  usage: 'image show NAME',
  summary: 'Show an image, its versions, their kernels and initramfs flavour, and which clients run each',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 1, names: ['NAME'] },
  json: true,
  async run(ctx) {
    const name = imageArg(ctx.positionals[0]!);
    const shown = await withCatalogue(ctx, false, (c) => {
      if (!c) throw notFound(`no image named "${name}" (the catalogue is empty)`);
      const { image, versions } = c.showImage(name);
      const clients = c.listClients();
      return {
        ...image,
        versions: versions.map((v) => ({
          ...v,
          runningOn: clients.filter((x) => x.bootVersionId === v.id && x.bootId !== null).map((x) => x.mac),
          pinnedBy: clients.filter((x) => x.image === name && x.pinnedVersion === v.version).map((x) => x.mac),
        })),
      };
    });
    return emit(ctx, shown, () => [
      ...fields([['name', shown.name], ['current', shown.currentVersion === null ? '-' : String(shown.currentVersion)], ['created', time(shown.createdMs)]]),
      '',
      ...table(['VERSION', 'SIZE', 'PUBLISHED', 'ORIGIN', 'KERNEL', 'INITRAMFS', 'CLIENTS', 'CREATED'], shown.versions.map((v) => {
        const info = (v.bootInfo ?? {}) as Record<string, unknown>;
        return [
          String(v.version) + (v.version === shown.currentVersion ? ' *' : ''), bytes(v.size), v.published ? 'yes' : 'held', origin(v),
          typeof info.kernelVersion === 'string' ? info.kernelVersion : '- (not bootable)', typeof info.initramfsFlavour === 'string' ? info.initramfsFlavour : '-',
          String(v.runningOn.length) + (v.pinnedBy.length ? ` (+${v.pinnedBy.length} pinned)` : ''), time(v.createdMs),
        ];
      })),
      ...shown.versions.flatMap((v) => {
        const details = ((v.bootInfo ?? {}) as { kernelDetails?: { version: string; kernel: string; initrd: string | null; nbd: boolean; flavour: string | null }[] }).kernelDetails ?? [];
        return details.length === 0 ? [] : [
          '', `version ${v.version} kernels (sha256 ${v.sha256}):`,
          ...details.map((k) => `  ${k.version}  ${k.kernel}  ${k.initrd ?? '(no initramfs)'}  ${k.nbd ? `NBD root: yes (${k.flavour})` : 'NBD root: no'}`),
        ];
      }),
    ]);
  },
};

const imagePublish: Command = {
  path: ['image', 'publish'],
  usage: 'image publish NAME VERSION',
  summary: 'Publish a held version: clients not pinned elsewhere boot it from their next boot on',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 2, max: 2, names: ['NAME', 'VERSION'] },
  json: true,
  async run(ctx) {
    const name = imageArg(ctx.positionals[0]!);
    const version = versionArg(ctx.positionals[1]!);
    const v = await changeCatalogue(ctx, (c) => c.publishVersion(name, version));
    return emit(ctx, v, () => [`${name} version ${version} is published and current`]);
  },
};

const imageRollback: Command = {
  path: ['image', 'rollback'],
  usage: 'image rollback NAME [VERSION]',
  summary: 'Make an earlier published version current again (default: the one before the current one)',
  help: 'Running clients keep what they booted; each client boots the version rolled back to at its next boot.',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 2, names: ['NAME', 'VERSION'] },
  json: true,
  async run(ctx) {
    const name = imageArg(ctx.positionals[0]!);
    const version = ctx.positionals[1] === undefined ? undefined : versionArg(ctx.positionals[1]);
    const r = await changeCatalogue(ctx, (c) => c.rollback(name, version));
    return emit(ctx, r, () => [`${name}: current version ${r.from ?? '-'} -> ${r.to}`]);
  },
};

const imageDelete: Command = {
  path: ['image', 'delete'],
  usage: 'image delete NAME [VERSION]',
  summary: 'Delete a version (or the whole image) that nothing depends on',
  help: 'Refused, naming them, while the version is current, pinned by a client, run by a client\'s current boot or under an overlay; an image, while clients are assigned to it.',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 2, names: ['NAME', 'VERSION'] },
  json: true,
  async run(ctx) {
    const name = imageArg(ctx.positionals[0]!);
    if (ctx.positionals[1] === undefined) {
      const r = await changeCatalogue(ctx, (c) => c.deleteImage(name));
      return emit(ctx, r, () => [`deleted image ${name}${r.versions.length ? ` and its versions ${r.versions.join(', ')}` : ''}`]);
    }
    const version = versionArg(ctx.positionals[1]);
    const r = await changeCatalogue(ctx, (c) => c.deleteVersion(name, version));
    return emit(ctx, r, () => [`deleted ${name} version ${version} (${r.removed.join(', ')})`]);
  },
};

const imageCommit: Command = {
  path: ['image', 'commit'],
  usage: 'image commit CLIENT [--hold] [--force]',
  summary: 'Turn a maintenance client\'s draft into the next version of its image',
  help: [
    'Shut the client down first (its file systems must be clean). The draft is flattened over',
    'its base into a new immutable version, inspected like any other, and published (or held',
    'with --hold for clients pinned to it). The client leaves maintenance; its draft is discarded.',
  ].join('\n'),
  options: { ...DATA_OPTIONS, hold: { type: 'boolean' }, force: { type: 'boolean' } },
  optionHelp: [
    ['--hold', 'do not publish: pin a test group to the version, then `diskless image publish`'],
    ['--force', 'commit although a newer version was published since the draft began'],
    ...DATA_HELP,
  ],
  positionals: { min: 1, max: 1, names: ['CLIENT'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const v = await changeCatalogue(ctx, (c) => c.commitMaintenance(mac, { publish: ctx.values.hold !== true, force: ctx.values.force === true }));
    return emit(ctx, v, () => added(v));
  },
};

export const IMAGE_COMMANDS: readonly Command[] = [
  imageAdd, imageImport, imageBuild, imageList, imageShow, imagePublish, imageRollback, imageDelete, imageCommit,
];
