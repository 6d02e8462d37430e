/**
 * The embedded store: the catalogue of images, image versions, clients,
 * overlays, unknown machines, boot events and DHCP leases, in one SQLite
 * file `<dataDir>/diskless.db`. This is the only module that imports
 * better-sqlite3; everything else sees typed repository methods.
 *
 *   const store = Store.open('/var/lib/diskless');
 *   store.images.create('debian12');
 *   store.transaction(() => { ... several writes, all or nothing ... });
 *   store.close();
 *
 * Why SQLite this way:
 * - WAL journal: readers (the NBD resolver, the dashboard) never wait for a
 *   writer, and the CLI can change the catalogue while the server runs.
 *   synchronous=FULL: a DHCP lease must be on disk before it is
 *   acknowledged (RFC 2131 section 4.3.2); writes are few, so the cost is
 *   small.
 * - busy_timeout: a second process (the CLI beside the server) waits for the
 *   write lock instead of failing at once.
 * - foreign_keys=ON, CHECK constraints and triggers (migrations.ts): the
 *   schema enforces what the methods check first.
 * - better-sqlite3 is synchronous, so a transaction is one uninterrupted
 *   run of JavaScript: no other request of this process can interleave, and
 *   BEGIN IMMEDIATE keeps other processes out until it commits. Every
 *   method that writes several rows runs in one transaction, and
 *   transaction() lets the app group its own steps the same way.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { DisklessError } from '../lib/errors.js';
import { normalizeMac } from '../lib/net.js';
import { StateError, invalid, notFound, stateErrorOf } from './errors.js';
import { BOOT_STEPS, CLIENT_MODES, CLIENT_STATES, LEASE_STATES, MIGRATIONS, type Migration } from './migrations.js';
import type {
  BootEventRecord, BootInfo, BootStep, ClientMode, ClientRecord, ClientState, ImageRecord,
  ImageVersionRecord, LeaseRow, OverlayRecord, UnknownMachineRecord,
} from './types.js';

export * from './types.js';
export { BOOT_STEPS, CLIENT_MODES, CLIENT_STATES, LEASE_STATES, LATEST_SCHEMA_VERSION } from './migrations.js';

export const DB_FILE = 'diskless.db';
/** How long a writer waits for another process's write transaction before STATE_BUSY. */
export const DEFAULT_BUSY_TIMEOUT_MS = 5000;
/** The data directory and the database are the server's alone. */
const DATA_DIR_MODE = 0o750;
const DB_FILE_MODE = 0o600;

/** Image names are used as directory names and in export names. */
export const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
/** Client names may become DHCP host names (RFC 1123 labels, plus dot and underscore). */
export const CLIENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const SHA256 = /^[0-9a-f]{64}$/;
const TOKEN = /^[0-9a-f]{32}$/;
/** Boot ids appear in URLs (the HTTP boot routes accept [A-Za-z0-9_-]{1,64}). */
const BOOT_ID = /^[A-Za-z0-9_-]{1,64}$/;

export interface StoreOptions {
  /** The clock for *_ms columns; tests substitute their own. */
  now?: () => number;
  busyTimeoutMs?: number;
  /** Steps to apply; tests pass extra ones. Default MIGRATIONS. */
  migrations?: readonly Migration[];
}

export interface AppliedMigration {
  version: number;
  name: string;
  appliedMs: number;
}

type Row = Record<string, unknown>;

export class Store {
  readonly path: string;
  readonly images: ImageRepo;
  readonly clients: ClientRepo;
  readonly overlays: OverlayRepo;
  readonly unknownMachines: UnknownMachineRepo;
  readonly events: BootEventRepo;
  readonly leases: LeaseRepo;
  /** @internal */
  readonly now: () => number;
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();

  private constructor(db: Database.Database, path: string, now: () => number) {
    this.db = db;
    this.path = path;
    this.now = now;
    this.images = new ImageRepo(this);
    this.clients = new ClientRepo(this);
    this.overlays = new OverlayRepo(this);
    this.unknownMachines = new UnknownMachineRepo(this);
    this.events = new BootEventRepo(this);
    this.leases = new LeaseRepo(this);
  }

  /**
   * Opens `<dataDir>/diskless.db`, creating the directory (mode 0750) and the
   * file (mode 0600) if needed, and brings the schema up to date.
   */
  static open(dataDir: string, options: StoreOptions = {}): Store {
    const path = join(dataDir, DB_FILE);
    let db: Database.Database;
    try {
      mkdirSync(dataDir, { recursive: true, mode: DATA_DIR_MODE });
      // Create the file ourselves so it never exists with a wider mode;
      // SQLite gives the -wal and -shm files the mode of the database.
      closeSync(openSync(path, 'a', DB_FILE_MODE));
      chmodSync(path, DB_FILE_MODE);
      db = new Database(path);
    } catch (err) {
      throw new StateError('STATE_OPEN_FAILED', `cannot open the catalogue ${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS))}`);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (String(mode).toLowerCase() !== 'wal') throw new Error(`journal mode is ${String(mode)}, not wal`);
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      migrate(db, options.migrations ?? MIGRATIONS, options.now ?? Date.now);
    } catch (err) {
      db.close();
      if (err instanceof StateError) throw err;
      const code = (err as { code?: unknown }).code;
      const e = stateErrorOf(err, `opening the catalogue ${path}`);
      if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_READONLY') {
        throw new StateError('STATE_OPEN_FAILED', e.message, { cause: err });
      }
      throw e;
    }
    return new Store(db, path, options.now ?? Date.now);
  }

  /**
   * Runs `fn` in one write transaction (BEGIN IMMEDIATE): all of its writes
   * or none. `fn` must be synchronous. Nested calls become savepoints.
   */
  transaction<T>(fn: () => T): T {
    if (!this.db.open) throw new StateError('STATE_CLOSED', 'transaction: the store is closed');
    try {
      return this.db.transaction(fn).immediate();
    } catch (err) {
      // The app's own refusals inside the transaction keep their codes.
      if (err instanceof DisklessError) throw err;
      throw stateErrorOf(err, 'transaction');
    }
  }

  get inTransaction(): boolean {
    return this.db.open && this.db.inTransaction;
  }

  schemaVersion(): number {
    return this.guard('reading the schema version', () => (this.db.prepare('SELECT max(version) AS v FROM schema_migrations').get() as { v: number }).v);
  }

  appliedMigrations(): AppliedMigration[] {
    return this.guard('reading the migrations', () =>
      (this.db.prepare('SELECT version, name, applied_ms AS appliedMs FROM schema_migrations ORDER BY version').all() as AppliedMigration[]));
  }

  get isOpen(): boolean {
    return this.db.open;
  }

  close(): void {
    if (!this.db.open) return;
    this.statements.clear();
    this.db.close();
  }

  /** @internal Runs a step with the store's error mapping. */
  guard<T>(what: string, fn: () => T): T {
    if (!this.db.open) throw new StateError('STATE_CLOSED', `${what}: the store is closed`);
    try {
      return fn();
    } catch (err) {
      throw stateErrorOf(err, what);
    }
  }

  /** @internal A cached prepared statement. */
  stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }
}

function migrate(db: Database.Database, migrations: readonly Migration[], now: () => number): void {
  for (let i = 0; i < migrations.length; i++) {
    if (migrations[i]!.version !== i + 1) throw new Error(`migration ${i} has version ${migrations[i]!.version}; versions must be 1, 2, 3...`);
  }
  const latest = migrations.length;
  const run = db.transaction(() => {
    db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL) STRICT');
    const current = (db.prepare('SELECT coalesce(max(version), 0) AS v FROM schema_migrations').get() as { v: number }).v;
    if (current > latest) {
      throw new StateError('STATE_SCHEMA_TOO_NEW', `the catalogue has schema version ${current}; this diskless knows up to ${latest}. Use a newer diskless.`);
    }
    const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)');
    for (const m of migrations.slice(current)) {
      try {
        m.up(db);
      } catch (err) {
        throw new StateError('STATE_MIGRATION_FAILED', `schema migration ${m.version} (${m.name}) failed: ${(err as Error).message}`, { cause: err });
      }
      record.run(m.version, m.name, now());
    }
    // Catch a step that broke a reference (the schema stays as it was if so).
    const broken = db.pragma('foreign_key_check') as unknown[];
    if (broken.length > 0) throw new StateError('STATE_MIGRATION_FAILED', `schema migrations left ${broken.length} broken references`);
  });
  // Foreign keys are checked per statement; a migration may need them off to
  // rebuild a table, so they are off while migrating (they cannot be changed
  // inside a transaction) and checked in full at the end.
  db.pragma('foreign_keys = OFF');
  run.immediate();
  db.pragma('foreign_keys = ON');
}

// ---------------------------------------------------------------------------
// Validation at the boundary. The schema checks again.

export function requireMac(text: string): string {
  const mac = typeof text === 'string' ? normalizeMac(text) : null;
  if (!mac) throw invalid(`"${String(text)}" is not a MAC address (expected six bytes in hex, e.g. 52:54:00:12:34:56)`);
  return mac;
}

export function requireImageName(name: string): string {
  if (typeof name !== 'string' || !IMAGE_NAME.test(name)) {
    throw invalid(`"${String(name)}" is not an image name: 1-64 of a-z 0-9 . _ -, starting with a letter or digit`);
  }
  return name;
}

export function requireClientName(name: string): string {
  if (typeof name !== 'string' || !CLIENT_NAME.test(name)) {
    throw invalid(`"${String(name)}" is not a client name: 1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit`);
  }
  return name;
}

function requireVersionNumber(v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw invalid(`${String(v)} is not a version number (1, 2, 3...)`);
  return v;
}

function requireOneOf<T extends string>(what: string, value: string, values: readonly T[]): T {
  if (!(values as readonly string[]).includes(value)) throw invalid(`${what} must be one of ${values.join(', ')}, got "${value}"`);
  return value as T;
}

function jsonText(what: string, value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'object' || Array.isArray(value)) throw invalid(`${what} must be a JSON object`);
  try {
    return JSON.stringify(value);
  } catch (err) {
    throw invalid(`${what} cannot be written as JSON: ${(err as Error).message}`);
  }
}

function parseJson<T>(text: unknown): T | null {
  return typeof text === 'string' ? (JSON.parse(text) as T) : null;
}

const num = (v: unknown): number => Number(v);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

// ---------------------------------------------------------------------------
// Images and image versions

const VERSION_SELECT = `SELECT v.*, i.name AS image_name FROM image_versions v JOIN images i ON i.id = v.image_id`;

function toImage(r: Row): ImageRecord {
  return { id: num(r.id), name: String(r.name), description: strOrNull(r.description), currentVersion: numOrNull(r.current_version), createdMs: num(r.created_ms) };
}

function toVersion(r: Row): ImageVersionRecord {
  return {
    id: num(r.id), imageId: num(r.image_id), image: String(r.image_name), version: num(r.version), path: String(r.path),
    size: num(r.size), sha256: String(r.sha256), createdMs: num(r.created_ms), published: r.published === 1 || r.published === 1n,
    bootInfo: parseJson<BootInfo>(r.boot_info),
  };
}

export interface NewImageVersion {
  image: string;
  version: number;
  /** Relative to the data directory. */
  path: string;
  size: number;
  sha256: string;
  published?: boolean;
  bootInfo?: BootInfo | null;
}

export interface VersionDependants {
  /** It is the image's current version. */
  current: boolean;
  /** Clients pinned to it. */
  pinnedBy: string[];
  /** Clients whose current boot runs it. */
  runningOn: string[];
  /** Clients whose overlay sits on it. */
  overlaysOf: string[];
}

/** "the current version; pinned by aa:..; running on ..": for refusals. */
export function describeDependants(d: VersionDependants): string {
  const parts: string[] = [];
  if (d.current) parts.push('it is the current version (publish or roll back to another first)');
  if (d.pinnedBy.length > 0) parts.push(`pinned by ${d.pinnedBy.join(', ')}`);
  if (d.runningOn.length > 0) parts.push(`running on ${d.runningOn.join(', ')}`);
  if (d.overlaysOf.length > 0) parts.push(`the overlay of ${d.overlaysOf.join(', ')} sits on it`);
  return parts.join('; ');
}

export class ImageRepo {
  constructor(private readonly s: Store) {}

  create(name: string, options: { description?: string } = {}): ImageRecord {
    requireImageName(name);
    return this.s.guard(`adding image ${name}`, () => {
      const r = this.s.stmt('INSERT INTO images (name, description, created_ms) VALUES (?, ?, ?) RETURNING *')
        .get(name, options.description ?? null, this.s.now()) as Row;
      return toImage(r);
    });
  }

  get(name: string): ImageRecord | null {
    return this.s.guard(`reading image ${name}`, () => {
      const r = this.s.stmt('SELECT * FROM images WHERE name = ?').get(name) as Row | undefined;
      return r ? toImage(r) : null;
    });
  }

  require(name: string): ImageRecord {
    const image = this.get(name);
    if (!image) throw notFound(`no image named "${name}"`);
    return image;
  }

  /** The image, created if it does not exist yet. */
  ensure(name: string): ImageRecord {
    return this.s.transaction(() => this.get(name) ?? this.create(name));
  }

  list(): ImageRecord[] {
    return this.s.guard('listing images', () => (this.s.stmt('SELECT * FROM images ORDER BY name').all() as Row[]).map(toImage));
  }

  /** The number the next version of `name` will get (1 for the first). */
  nextVersion(name: string): number {
    const image = this.require(name);
    return this.s.guard(`numbering a version of ${name}`, () =>
      num((this.s.stmt('SELECT coalesce(max(version), 0) + 1 AS v FROM image_versions WHERE image_id = ?').get(image.id) as Row).v));
  }

  addVersion(v: NewImageVersion): ImageVersionRecord {
    requireVersionNumber(v.version);
    if (!Number.isSafeInteger(v.size) || v.size <= 0) throw invalid(`version size ${v.size} is not a positive integer`);
    if (typeof v.sha256 !== 'string' || !SHA256.test(v.sha256)) throw invalid('sha256 must be 64 lower-case hex digits');
    if (typeof v.path !== 'string' || v.path === '' || v.path.startsWith('/')) throw invalid(`version path "${v.path}" must be relative to the data directory`);
    const bootInfo = jsonText('boot info', v.bootInfo);
    return this.s.transaction(() => {
      const image = this.require(v.image);
      return this.s.guard(`adding version ${v.version} of ${v.image}`, () => {
        const r = this.s.stmt(
          'INSERT INTO image_versions (image_id, version, path, size, sha256, created_ms, published, boot_info) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id',
        ).get(image.id, v.version, v.path, v.size, v.sha256, this.s.now(), v.published ? 1 : 0, bootInfo) as Row;
        return this.versionById(num(r.id))!;
      });
    });
  }

  /** Marks a version published (it never changes again) and makes it the image's current version. */
  publish(name: string, version: number): ImageVersionRecord {
    return this.s.transaction(() => {
      const v = this.requireVersion(name, version);
      this.s.guard(`publishing ${name} version ${version}`, () => {
        if (!v.published) this.s.stmt('UPDATE image_versions SET published = 1 WHERE id = ?').run(v.id);
        this.s.stmt('UPDATE images SET current_version = ? WHERE id = ?').run(version, v.imageId);
      });
      return this.versionById(v.id)!;
    });
  }

  /** Makes a published version the one clients boot (a roll-back or roll-forward). */
  setCurrent(name: string, version: number): ImageRecord {
    return this.s.transaction(() => {
      const v = this.requireVersion(name, version);
      if (!v.published) throw invalid(`${name} version ${version} is not published`);
      this.s.guard(`setting the current version of ${name}`, () => this.s.stmt('UPDATE images SET current_version = ? WHERE id = ?').run(version, v.imageId));
      return this.require(name);
    });
  }

  version(name: string, version: number): ImageVersionRecord | null {
    return this.s.guard(`reading ${name} version ${version}`, () => {
      const r = this.s.stmt(`${VERSION_SELECT} WHERE i.name = ? AND v.version = ?`).get(name, version) as Row | undefined;
      return r ? toVersion(r) : null;
    });
  }

  requireVersion(name: string, version: number): ImageVersionRecord {
    const v = this.version(name, version);
    if (!v) {
      this.require(name);
      throw notFound(`image "${name}" has no version ${version}`);
    }
    return v;
  }

  versionById(id: number): ImageVersionRecord | null {
    return this.s.guard(`reading image version #${id}`, () => {
      const r = this.s.stmt(`${VERSION_SELECT} WHERE v.id = ?`).get(id) as Row | undefined;
      return r ? toVersion(r) : null;
    });
  }

  versions(name: string): ImageVersionRecord[] {
    const image = this.require(name);
    return this.s.guard(`listing versions of ${name}`, () =>
      (this.s.stmt(`${VERSION_SELECT} WHERE v.image_id = ? ORDER BY v.version`).all(image.id) as Row[]).map(toVersion));
  }

  /** The current (published) version, or null when none is published yet. */
  current(name: string): ImageVersionRecord | null {
    const image = this.require(name);
    return image.currentVersion === null ? null : this.version(name, image.currentVersion);
  }

  /**
   * What keeps a version from being deleted: the image's current version,
   * clients pinned to it, clients whose current boot runs it, overlays on it.
   */
  dependants(name: string, version: number): VersionDependants {
    const v = this.requireVersion(name, version);
    return this.s.guard(`finding what depends on ${name} version ${version}`, () => {
      const image = this.require(name);
      const macs = (sql: string): string[] => (this.s.stmt(sql).all(v.id) as Row[]).map((r) => String(r.mac));
      return {
        current: image.currentVersion === version,
        pinnedBy: (this.s.stmt('SELECT mac FROM clients WHERE image_id = ? AND pinned_version = ? ORDER BY mac').all(v.imageId, version) as Row[]).map((r) => String(r.mac)),
        runningOn: macs('SELECT mac FROM clients WHERE boot_version_id = ? AND boot_id IS NOT NULL ORDER BY mac'),
        overlaysOf: macs('SELECT c.mac AS mac FROM overlays o JOIN clients c ON c.id = o.client_id WHERE o.version_id = ? ORDER BY c.mac'),
      };
    });
  }

  /**
   * Deletes a version's row, if nothing depends on it (see dependants());
   * clients that last booted it (no current boot) forget that. The files
   * are the caller's to delete.
   */
  removeVersion(name: string, version: number): ImageVersionRecord {
    return this.s.transaction(() => {
      const v = this.requireVersion(name, version);
      const d = this.dependants(name, version);
      if (d.current || d.pinnedBy.length > 0 || d.runningOn.length > 0 || d.overlaysOf.length > 0) {
        throw new StateError('STATE_CONFLICT', `${name} version ${version} is in use: ${describeDependants(d)}`);
      }
      this.s.guard(`deleting ${name} version ${version}`, () => {
        this.s.stmt('UPDATE clients SET boot_version_id = NULL WHERE boot_version_id = ?').run(v.id);
        this.s.stmt('DELETE FROM image_versions WHERE id = ?').run(v.id);
      });
      return v;
    });
  }

  /** Deletes an image with no versions and no clients. */
  remove(name: string): ImageRecord {
    return this.s.transaction(() => {
      const image = this.require(name);
      const clients = (this.s.stmt('SELECT mac FROM clients WHERE image_id = ? ORDER BY mac').all(image.id) as Row[]).map((r) => String(r.mac));
      if (clients.length > 0) throw new StateError('STATE_CONFLICT', `image "${name}" is assigned to client${clients.length === 1 ? '' : 's'} ${clients.join(', ')}`);
      const versions = this.versions(name);
      if (versions.length > 0) throw new StateError('STATE_CONFLICT', `image "${name}" still has version${versions.length === 1 ? '' : 's'} ${versions.map((v) => v.version).join(', ')}`);
      this.s.guard(`deleting image ${name}`, () => this.s.stmt('DELETE FROM images WHERE id = ?').run(image.id));
      return image;
    });
  }

  /** Clears the current version (only while deleting an image's last versions). */
  clearCurrent(name: string): void {
    const image = this.require(name);
    this.s.guard(`clearing the current version of ${name}`, () => this.s.stmt('UPDATE images SET current_version = NULL WHERE id = ?').run(image.id));
  }

  /** Records what was found in a version for booting it (allowed on published versions: it does not change the bytes). */
  setBootInfo(versionId: number, info: BootInfo | null): ImageVersionRecord {
    const text = jsonText('boot info', info);
    return this.s.guard(`setting the boot info of version #${versionId}`, () => {
      const r = this.s.stmt('UPDATE image_versions SET boot_info = ? WHERE id = ?').run(text, versionId);
      if (r.changes === 0) throw notFound(`no image version #${versionId}`);
      return this.versionById(versionId)!;
    });
  }
}

// ---------------------------------------------------------------------------
// Clients

const CLIENT_SELECT = `
SELECT c.*, i.name AS image_name, bv.version AS boot_version, bi.name AS boot_image
FROM clients c
JOIN images i ON i.id = c.image_id
LEFT JOIN image_versions bv ON bv.id = c.boot_version_id
LEFT JOIN images bi ON bi.id = bv.image_id`;

function toClient(r: Row): ClientRecord {
  return {
    id: num(r.id), mac: String(r.mac), name: strOrNull(r.name), imageId: num(r.image_id), image: String(r.image_name),
    pinnedVersion: numOrNull(r.pinned_version), mode: r.mode as ClientMode,
    bootVersionId: numOrNull(r.boot_version_id), bootVersion: numOrNull(r.boot_version), bootImage: strOrNull(r.boot_image),
    bootId: strOrNull(r.boot_id), bootToken: strOrNull(r.boot_token), bootStartedMs: numOrNull(r.boot_started_ms),
    bootAddress: strOrNull(r.boot_address), lastAddress: strOrNull(r.last_address), lastSeenMs: numOrNull(r.last_seen_ms),
    state: r.state as ClientState, maintenance: r.maintenance === 1 || r.maintenance === 1n, quotaBytes: numOrNull(r.quota_bytes),
    createdMs: num(r.created_ms), updatedMs: num(r.updated_ms),
  };
}

export interface NewClient {
  mac: string;
  image: string;
  mode?: ClientMode;
  name?: string | null;
  pinnedVersion?: number | null;
}

export interface ClientChanges {
  name?: string | null;
  image?: string;
  pinnedVersion?: number | null;
  mode?: ClientMode;
  /** Most bytes the overlay may allocate; null removes the limit. */
  quotaBytes?: number | null;
}

export interface BootStart {
  versionId: number;
  bootId: string;
  token: string;
  /** The source address the boot is bound to from the start, when known (the HTTP script fetch). */
  address?: string | null;
}

export class ClientRepo {
  constructor(private readonly s: Store) {}

  /** Adds a client; the machine leaves the unknown-machines list in the same transaction. */
  add(c: NewClient): ClientRecord {
    const mac = requireMac(c.mac);
    requireImageName(c.image);
    const mode = requireOneOf('mode', c.mode ?? 'ephemeral', CLIENT_MODES);
    if (c.name !== undefined && c.name !== null) requireClientName(c.name);
    if (c.pinnedVersion !== undefined && c.pinnedVersion !== null) requireVersionNumber(c.pinnedVersion);
    return this.s.transaction(() => {
      const image = this.s.images.require(c.image);
      if (c.pinnedVersion != null) this.s.images.requireVersion(c.image, c.pinnedVersion);
      if (this.get(mac)) throw new StateError('STATE_CONFLICT', `client ${mac} already exists`);
      if (c.name != null && this.byName(c.name)) throw new StateError('STATE_CONFLICT', `a client is already named "${c.name}"`);
      const now = this.s.now();
      this.s.guard(`adding client ${mac}`, () => {
        this.s.stmt('INSERT INTO clients (mac, name, image_id, pinned_version, mode, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)')
          .run(mac, c.name ?? null, image.id, c.pinnedVersion ?? null, mode, now, now);
        this.s.stmt('DELETE FROM unknown_machines WHERE mac = ?').run(mac);
      });
      return this.require(mac);
    });
  }

  get(mac: string): ClientRecord | null {
    const m = requireMac(mac);
    return this.s.guard(`reading client ${m}`, () => {
      const r = this.s.stmt(`${CLIENT_SELECT} WHERE c.mac = ?`).get(m) as Row | undefined;
      return r ? toClient(r) : null;
    });
  }

  require(mac: string): ClientRecord {
    const c = this.get(mac);
    if (!c) throw notFound(`no client with MAC ${requireMac(mac)}`);
    return c;
  }

  byId(id: number): ClientRecord | null {
    return this.s.guard(`reading client #${id}`, () => {
      const r = this.s.stmt(`${CLIENT_SELECT} WHERE c.id = ?`).get(id) as Row | undefined;
      return r ? toClient(r) : null;
    });
  }

  byName(name: string): ClientRecord | null {
    return this.s.guard(`reading client ${name}`, () => {
      const r = this.s.stmt(`${CLIENT_SELECT} WHERE c.name = ?`).get(name) as Row | undefined;
      return r ? toClient(r) : null;
    });
  }

  list(): ClientRecord[] {
    return this.s.guard('listing clients', () => (this.s.stmt(`${CLIENT_SELECT} ORDER BY c.mac`).all() as Row[]).map(toClient));
  }

  /** Changes what a client boots next time; the current boot is not touched. */
  update(mac: string, changes: ClientChanges): ClientRecord {
    const m = requireMac(mac);
    if (changes.name != null) requireClientName(changes.name);
    if (changes.image !== undefined) requireImageName(changes.image);
    if (changes.mode !== undefined) requireOneOf('mode', changes.mode, CLIENT_MODES);
    if (changes.pinnedVersion != null) requireVersionNumber(changes.pinnedVersion);
    if (changes.quotaBytes != null && (!Number.isSafeInteger(changes.quotaBytes) || changes.quotaBytes <= 0)) {
      throw invalid(`quota ${String(changes.quotaBytes)} is not a positive number of bytes`);
    }
    return this.s.transaction(() => {
      const c = this.require(m);
      const image = changes.image !== undefined ? this.s.images.require(changes.image) : { id: c.imageId, name: c.image };
      // A pin belongs to an image: changing the image drops it unless a new one is given.
      const pinned = changes.pinnedVersion !== undefined ? changes.pinnedVersion : changes.image !== undefined && image.id !== c.imageId ? null : c.pinnedVersion;
      if (pinned !== null) this.s.images.requireVersion(image.name, pinned);
      const name = changes.name !== undefined ? changes.name : c.name;
      if (name !== null && name !== c.name) {
        const other = this.byName(name);
        if (other && other.id !== c.id) throw new StateError('STATE_CONFLICT', `a client is already named "${name}"`);
      }
      const quota = changes.quotaBytes !== undefined ? changes.quotaBytes : c.quotaBytes;
      this.s.guard(`changing client ${m}`, () =>
        this.s.stmt('UPDATE clients SET name = ?, image_id = ?, pinned_version = ?, mode = ?, quota_bytes = ?, updated_ms = ? WHERE id = ?')
          .run(name, image.id, pinned, changes.mode ?? c.mode, quota, this.s.now(), c.id));
      return this.require(m);
    });
  }

  /** Turns maintenance on or off (what the next boot makes of the overlay is the app's policy). */
  setMaintenance(mac: string, on: boolean): ClientRecord {
    const m = requireMac(mac);
    return this.s.transaction(() => {
      const r = this.s.guard(`setting maintenance of ${m}`, () =>
        this.s.stmt('UPDATE clients SET maintenance = ?, updated_ms = ? WHERE mac = ?').run(on ? 1 : 0, this.s.now(), m));
      if (r.changes === 0) throw notFound(`no client with MAC ${m}`);
      return this.require(m);
    });
  }

  /** Removes a client; its overlay row goes with it (the directory is the caller's to delete). */
  remove(mac: string): boolean {
    const m = requireMac(mac);
    return this.s.guard(`removing client ${m}`, () => this.s.stmt('DELETE FROM clients WHERE mac = ?').run(m).changes === 1);
  }

  /** Records the start of a new boot: its version, id, export token and (if known) address. */
  beginBoot(mac: string, boot: BootStart): ClientRecord {
    const m = requireMac(mac);
    if (!BOOT_ID.test(boot.bootId)) throw invalid(`boot id "${boot.bootId}" must be 1-64 of A-Z a-z 0-9 _ -`);
    if (!TOKEN.test(boot.token)) throw invalid('an export token is 32 lower-case hex digits');
    return this.s.transaction(() => {
      const now = this.s.now();
      const r = this.s.guard(`starting a boot of ${m}`, () =>
        this.s.stmt(`UPDATE clients SET boot_version_id = ?, boot_id = ?, boot_token = ?, boot_started_ms = ?, boot_address = ?,
                     last_address = coalesce(?, last_address), last_seen_ms = ?, state = 'booting', updated_ms = ? WHERE mac = ?`)
          .run(boot.versionId, boot.bootId, boot.token, now, boot.address ?? null, boot.address ?? null, now, now, m));
      if (r.changes === 0) throw notFound(`no client with MAC ${m}`);
      return this.require(m);
    });
  }

  /** Ends the current boot: no export token, no address binding, state `new`. */
  endBoot(mac: string): ClientRecord {
    const m = requireMac(mac);
    return this.s.transaction(() => {
      const r = this.s.guard(`ending the boot of ${m}`, () =>
        this.s.stmt(`UPDATE clients SET boot_id = NULL, boot_token = NULL, boot_started_ms = NULL, boot_address = NULL,
                     state = 'new', updated_ms = ? WHERE mac = ?`).run(this.s.now(), m));
      if (r.changes === 0) throw notFound(`no client with MAC ${m}`);
      return this.require(m);
    });
  }

  /**
   * Binds boot `bootId` to `address` if it is not bound yet. Returns false
   * when the boot is no longer current or is already bound (to any address).
   */
  bindAddress(mac: string, bootId: string, address: string): boolean {
    const m = requireMac(mac);
    const now = this.s.now();
    return this.s.guard(`binding ${m} to ${address}`, () =>
      this.s.stmt(`UPDATE clients SET boot_address = ?, last_address = ?, last_seen_ms = ?, updated_ms = ?
                   WHERE mac = ? AND boot_id = ? AND boot_address IS NULL`).run(address, address, now, now, m, bootId).changes === 1);
  }

  /** Notes that the client was seen at `address` (its last known address). */
  seen(mac: string, address: string): void {
    const m = requireMac(mac);
    const now = this.s.now();
    this.s.guard(`noting ${m} at ${address}`, () =>
      this.s.stmt('UPDATE clients SET last_address = ?, last_seen_ms = ? WHERE mac = ?').run(address, now, m));
  }

  /** Sets the state of the current boot; false when `bootId` is not the current boot. */
  setState(mac: string, bootId: string, state: ClientState): boolean {
    const m = requireMac(mac);
    requireOneOf('state', state, CLIENT_STATES);
    return this.s.guard(`setting the state of ${m}`, () =>
      this.s.stmt('UPDATE clients SET state = ?, updated_ms = ? WHERE mac = ? AND boot_id = ?').run(state, this.s.now(), m, bootId).changes === 1);
  }
}

// ---------------------------------------------------------------------------
// Overlays

const OVERLAY_SELECT = `
SELECT o.*, c.mac AS mac, v.version AS version, i.name AS image_name
FROM overlays o
JOIN clients c ON c.id = o.client_id
JOIN image_versions v ON v.id = o.version_id
JOIN images i ON i.id = v.image_id`;

function toOverlay(r: Row): OverlayRecord {
  return {
    id: num(r.id), clientId: num(r.client_id), mac: String(r.mac), versionId: num(r.version_id), image: String(r.image_name),
    version: num(r.version), dir: String(r.dir), draft: r.draft === 1 || r.draft === 1n, createdMs: num(r.created_ms),
  };
}

export class OverlayRepo {
  constructor(private readonly s: Store) {}

  forClient(clientId: number): OverlayRecord | null {
    return this.s.guard(`reading the overlay of client #${clientId}`, () => {
      const r = this.s.stmt(`${OVERLAY_SELECT} WHERE o.client_id = ?`).get(clientId) as Row | undefined;
      return r ? toOverlay(r) : null;
    });
  }

  get(id: number): OverlayRecord | null {
    return this.s.guard(`reading overlay #${id}`, () => {
      const r = this.s.stmt(`${OVERLAY_SELECT} WHERE o.id = ?`).get(id) as Row | undefined;
      return r ? toOverlay(r) : null;
    });
  }

  list(): OverlayRecord[] {
    return this.s.guard('listing overlays', () => (this.s.stmt(`${OVERLAY_SELECT} ORDER BY c.mac`).all() as Row[]).map(toOverlay));
  }

  /**
   * Records a new overlay for a client (which must have none) on an image
   * version. `dirFor(mac, seq)` names its directory from the client's
   * overlay sequence number, which this call advances, so no two overlays
   * of a client ever share a directory.
   */
  create(clientId: number, versionId: number, dirFor: (mac: string, seq: number) => string, options: { draft?: boolean } = {}): OverlayRecord {
    return this.s.transaction(() => {
      const client = this.s.clients.byId(clientId);
      if (!client) throw notFound(`no client #${clientId}`);
      if (!this.s.images.versionById(versionId)) throw notFound(`no image version #${versionId}`);
      if (this.forClient(clientId)) throw new StateError('STATE_CONFLICT', `client ${client.mac} already has an overlay`);
      return this.s.guard(`creating an overlay for ${client.mac}`, () => {
        const seq = num((this.s.stmt('UPDATE clients SET overlay_seq = overlay_seq + 1 WHERE id = ? RETURNING overlay_seq').get(clientId) as Row).overlay_seq);
        const r = this.s.stmt('INSERT INTO overlays (client_id, version_id, dir, draft, created_ms) VALUES (?, ?, ?, ?, ?) RETURNING id')
          .get(clientId, versionId, dirFor(client.mac, seq), options.draft ? 1 : 0, this.s.now()) as Row;
        return this.get(num(r.id))!;
      });
    });
  }

  /** Forgets an overlay (discarded); false if it was already gone. */
  remove(id: number): boolean {
    return this.s.guard(`removing overlay #${id}`, () => this.s.stmt('DELETE FROM overlays WHERE id = ?').run(id).changes === 1);
  }
}

// ---------------------------------------------------------------------------
// Unknown machines

function toUnknown(r: Row): UnknownMachineRecord {
  return { mac: String(r.mac), firstSeenMs: num(r.first_seen_ms), lastSeenMs: num(r.last_seen_ms), arch: strOrNull(r.arch), attempts: num(r.attempts) };
}

export class UnknownMachineRepo {
  constructor(private readonly s: Store) {}

  /** Notes a boot attempt by a machine that is not a client. No-op for a known client. */
  seen(mac: string, options: { arch?: string | null; timeMs?: number } = {}): UnknownMachineRecord | null {
    const m = requireMac(mac);
    const t = options.timeMs ?? this.s.now();
    return this.s.transaction(() => {
      if (this.s.clients.get(m)) return null;
      this.s.guard(`noting unknown machine ${m}`, () =>
        this.s.stmt(`INSERT INTO unknown_machines (mac, first_seen_ms, last_seen_ms, arch, attempts) VALUES (?, ?, ?, ?, 1)
                     ON CONFLICT (mac) DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
                       arch = coalesce(excluded.arch, arch), attempts = attempts + 1`)
          .run(m, t, t, options.arch ?? null));
      return this.get(m);
    });
  }

  get(mac: string): UnknownMachineRecord | null {
    const m = requireMac(mac);
    return this.s.guard(`reading unknown machine ${m}`, () => {
      const r = this.s.stmt('SELECT * FROM unknown_machines WHERE mac = ?').get(m) as Row | undefined;
      return r ? toUnknown(r) : null;
    });
  }

  list(): UnknownMachineRecord[] {
    return this.s.guard('listing unknown machines', () =>
      (this.s.stmt('SELECT * FROM unknown_machines ORDER BY last_seen_ms DESC').all() as Row[]).map(toUnknown));
  }

  remove(mac: string): boolean {
    const m = requireMac(mac);
    return this.s.guard(`forgetting unknown machine ${m}`, () => this.s.stmt('DELETE FROM unknown_machines WHERE mac = ?').run(m).changes === 1);
  }
}

// ---------------------------------------------------------------------------
// Boot events

function toEvent(r: Row): BootEventRecord {
  return {
    id: num(r.id), mac: String(r.mac), bootId: strOrNull(r.boot_id), step: r.step as BootStep, timeMs: num(r.time_ms),
    detail: parseJson<Record<string, unknown>>(r.detail),
  };
}

export interface NewBootEvent {
  mac: string;
  step: BootStep;
  bootId?: string | null;
  detail?: Record<string, unknown> | null;
  timeMs?: number;
}

export class BootEventRepo {
  constructor(private readonly s: Store) {}

  record(e: NewBootEvent): BootEventRecord {
    const mac = requireMac(e.mac);
    const step = requireOneOf('boot step', e.step, BOOT_STEPS);
    const detail = jsonText('event detail', e.detail);
    return this.s.guard(`recording ${step} of ${mac}`, () =>
      toEvent(this.s.stmt('INSERT INTO boot_events (mac, boot_id, step, time_ms, detail) VALUES (?, ?, ?, ?, ?) RETURNING *')
        .get(mac, e.bootId ?? null, step, e.timeMs ?? this.s.now(), detail) as Row));
  }

  /** Events in the order they were recorded, newest `limit` of them (default 1000). */
  list(filter: { mac?: string; bootId?: string; afterId?: number; limit?: number } = {}): BootEventRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.mac !== undefined) {
      where.push('mac = ?');
      args.push(requireMac(filter.mac));
    }
    if (filter.bootId !== undefined) {
      where.push('boot_id = ?');
      args.push(filter.bootId);
    }
    if (filter.afterId !== undefined) {
      where.push('id > ?');
      args.push(filter.afterId);
    }
    const limit = Math.max(1, Math.min(100_000, Math.floor(filter.limit ?? 1000)));
    const sql = `SELECT * FROM (SELECT * FROM boot_events ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY id DESC LIMIT ${limit}) ORDER BY id`;
    return this.s.guard('listing boot events', () => (this.s.stmt(sql).all(...args) as Row[]).map(toEvent));
  }

  /** Deletes events older than `timeMs`; returns how many. */
  pruneBefore(timeMs: number): number {
    return this.s.guard('pruning boot events', () => this.s.stmt('DELETE FROM boot_events WHERE time_ms < ?').run(timeMs).changes);
  }
}

// ---------------------------------------------------------------------------
// DHCP leases

function toLease(r: Row): LeaseRow {
  return {
    address: String(r.address), subnet: String(r.subnet), mac: String(r.mac), clientKey: String(r.client_key),
    state: r.state as LeaseRow['state'], expiresMs: num(r.expires_ms), updatedMs: num(r.updated_ms), hostName: strOrNull(r.host_name),
  };
}

export class LeaseRepo {
  constructor(private readonly s: Store) {}

  list(): LeaseRow[] {
    return this.s.guard('listing DHCP leases', () => (this.s.stmt('SELECT * FROM dhcp_leases ORDER BY address').all() as Row[]).map(toLease));
  }

  get(address: string): LeaseRow | null {
    return this.s.guard(`reading the lease of ${address}`, () => {
      const r = this.s.stmt('SELECT * FROM dhcp_leases WHERE address = ?').get(address) as Row | undefined;
      return r ? toLease(r) : null;
    });
  }

  forMac(mac: string): LeaseRow[] {
    const m = requireMac(mac);
    return this.s.guard(`reading the leases of ${m}`, () => (this.s.stmt('SELECT * FROM dhcp_leases WHERE mac = ? ORDER BY updated_ms DESC').all(m) as Row[]).map(toLease));
  }

  /** Inserts or replaces the record of `lease.address`. */
  save(lease: LeaseRow): void {
    const mac = lease.mac === '' ? '' : requireMac(lease.mac);
    requireOneOf('lease state', lease.state, LEASE_STATES);
    this.s.guard(`saving the lease of ${lease.address}`, () =>
      this.s.stmt(`INSERT INTO dhcp_leases (address, subnet, mac, client_key, state, expires_ms, updated_ms, host_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (address) DO UPDATE SET subnet = excluded.subnet, mac = excluded.mac, client_key = excluded.client_key,
                     state = excluded.state, expires_ms = excluded.expires_ms, updated_ms = excluded.updated_ms, host_name = excluded.host_name`)
        .run(lease.address, lease.subnet, mac, lease.clientKey, lease.state, lease.expiresMs, lease.updatedMs, lease.hostName ?? null));
  }

  remove(address: string): boolean {
    return this.s.guard(`removing the lease of ${address}`, () => this.s.stmt('DELETE FROM dhcp_leases WHERE address = ?').run(address).changes === 1);
  }
}
