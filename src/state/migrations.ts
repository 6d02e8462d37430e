/**
 * The catalogue's schema as numbered steps. A step is never edited once it
 * has shipped: a change to the schema is a new step at the end. Store.open()
 * runs the steps a database has not had yet, all in one transaction, and
 * records each in `schema_migrations`; a database that has steps this code
 * does not know is refused (STATE_SCHEMA_TOO_NEW) rather than guessed at.
 *
 * Conventions: STRICT tables; times are integer milliseconds since the Unix
 * epoch in columns named `*_ms`; MACs are `aa:bb:cc:dd:ee:ff` (lower case);
 * paths are relative to the data directory, so the directory can move.
 * CHECK constraints and triggers repeat the checks the repository methods
 * make first, so a bug or a hand edit with the sqlite3 shell cannot store
 * what the code would refuse.
 */
import type { Database } from 'better-sqlite3';
import { TRIGGER_IMMUTABLE, TRIGGER_INVALID } from './errors.js';

export interface Migration {
  version: number;
  name: string;
  up(db: Database): void;
}

/** A SQL expression true when `col` is a normalized MAC. */
const MAC_CHECK = (col: string): string =>
  `(length(${col}) = 17 AND ${col} GLOB '[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]')`;

/** The boot timeline steps, in the order a boot normally goes through them. */
export const BOOT_STEPS = [
  'dhcp-discover', 'dhcp-offer', 'dhcp-ack', 'tftp', 'script', 'kernel', 'initrd', 'nbd-connect', 'os-up',
] as const;

export const LEASE_STATES = ['active', 'declined', 'released', 'offered'] as const;
export const CLIENT_MODES = ['ephemeral', 'persistent'] as const;
/** new: never booted (or reset); booting: a boot was started; up: its OS reported in. */
export const CLIENT_STATES = ['new', 'booting', 'up'] as const;

const list = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(', ');

const V1 = `
CREATE TABLE images (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE
    CHECK (length(name) BETWEEN 1 AND 64 AND name GLOB '[a-z0-9]*' AND name NOT GLOB '*[^a-z0-9._-]*'),
  description TEXT,
  -- The version clients boot unless pinned. Must be published (trigger below).
  current_version INTEGER,
  created_ms INTEGER NOT NULL,
  FOREIGN KEY (id, current_version) REFERENCES image_versions (image_id, version)
) STRICT;

CREATE TABLE image_versions (
  id INTEGER PRIMARY KEY,
  image_id INTEGER NOT NULL REFERENCES images (id),
  version INTEGER NOT NULL CHECK (version >= 1),
  -- The raw disk file, relative to the data directory.
  path TEXT NOT NULL UNIQUE,
  size INTEGER NOT NULL CHECK (size > 0),
  sha256 TEXT NOT NULL CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
  created_ms INTEGER NOT NULL,
  published INTEGER NOT NULL DEFAULT 0 CHECK (published IN (0, 1)),
  -- What was found in the image for booting it (kernels, initramfs); filled in later.
  boot_info TEXT CHECK (boot_info IS NULL OR json_valid(boot_info)),
  UNIQUE (image_id, version)
) STRICT;

-- A published version never changes: not its bytes (path, size, sha256), not its number, not its flag.
-- boot_info may still be filled in: it describes the bytes, it does not change them.
CREATE TRIGGER image_versions_immutable
BEFORE UPDATE OF image_id, version, path, size, sha256, created_ms, published ON image_versions
WHEN OLD.published = 1
BEGIN
  SELECT RAISE(ABORT, '${TRIGGER_IMMUTABLE} version ' || OLD.version || ' is published and never changes');
END;

CREATE TRIGGER images_current_published_insert
BEFORE INSERT ON images
WHEN NEW.current_version IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, '${TRIGGER_INVALID} a new image has no versions yet');
END;

CREATE TRIGGER images_current_published
BEFORE UPDATE OF current_version ON images
WHEN NEW.current_version IS NOT NULL AND NOT EXISTS (
  SELECT 1 FROM image_versions WHERE image_id = NEW.id AND version = NEW.current_version AND published = 1)
BEGIN
  SELECT RAISE(ABORT, '${TRIGGER_INVALID} the current version of an image must be a published version of it');
END;

CREATE TABLE clients (
  id INTEGER PRIMARY KEY,
  mac TEXT NOT NULL UNIQUE CHECK ${MAC_CHECK('mac')},
  name TEXT UNIQUE CHECK (name IS NULL OR (length(name) BETWEEN 1 AND 63 AND name NOT GLOB '*[^A-Za-z0-9._-]*')),
  image_id INTEGER NOT NULL REFERENCES images (id),
  -- A version of image_id to boot instead of the image's current one.
  pinned_version INTEGER,
  mode TEXT NOT NULL CHECK (mode IN (${list(CLIENT_MODES)})),
  -- The current boot: the version it runs, its id and export token, when it started,
  -- and the address it is bound to (NBD connections from elsewhere are refused).
  boot_version_id INTEGER REFERENCES image_versions (id),
  boot_id TEXT,
  boot_token TEXT,
  boot_started_ms INTEGER,
  boot_address TEXT,
  last_address TEXT,
  last_seen_ms INTEGER,
  state TEXT NOT NULL DEFAULT 'new' CHECK (state IN (${list(CLIENT_STATES)})),
  -- Numbers this client's overlay directories, so a new overlay never reuses an old one's.
  overlay_seq INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  FOREIGN KEY (image_id, pinned_version) REFERENCES image_versions (image_id, version),
  CHECK ((boot_id IS NULL) = (boot_token IS NULL)),
  CHECK (boot_token IS NULL OR (length(boot_token) = 32 AND boot_token NOT GLOB '*[^0-9a-f]*'))
) STRICT;

CREATE TABLE overlays (
  -- AUTOINCREMENT: an id is never reused, so an instance held open for an
  -- overlay can be told from its successor by id.
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  -- One live overlay per client. A discarded overlay loses its row at once;
  -- its directory is deleted as soon as nothing has it open.
  client_id INTEGER NOT NULL UNIQUE REFERENCES clients (id) ON DELETE CASCADE,
  version_id INTEGER NOT NULL REFERENCES image_versions (id),
  dir TEXT NOT NULL UNIQUE,
  created_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE unknown_machines (
  mac TEXT PRIMARY KEY CHECK ${MAC_CHECK('mac')},
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms INTEGER NOT NULL,
  arch TEXT,
  attempts INTEGER NOT NULL DEFAULT 1 CHECK (attempts >= 1)
) STRICT;

CREATE TABLE boot_events (
  id INTEGER PRIMARY KEY,
  -- Not a foreign key: machines not (yet) in the catalogue have timelines too.
  mac TEXT NOT NULL CHECK ${MAC_CHECK('mac')},
  boot_id TEXT,
  step TEXT NOT NULL CHECK (step IN (${list(BOOT_STEPS)})),
  time_ms INTEGER NOT NULL,
  detail TEXT CHECK (detail IS NULL OR json_valid(detail))
) STRICT;
CREATE INDEX boot_events_mac ON boot_events (mac, id);
CREATE INDEX boot_events_time ON boot_events (time_ms);

CREATE TABLE dhcp_leases (
  address TEXT PRIMARY KEY,
  subnet TEXT NOT NULL,
  -- Empty for a declined address, which belongs to no one.
  mac TEXT NOT NULL CHECK (mac = '' OR ${MAC_CHECK('mac')}),
  client_key TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN (${list(LEASE_STATES)})),
  expires_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  host_name TEXT
) STRICT;
CREATE INDEX dhcp_leases_mac ON dhcp_leases (mac);
`;

// Maintenance clients, whose overlay is a draft of the image's next version,
// and a per-client limit on the bytes its overlay may allocate.
const V2 = `
ALTER TABLE clients ADD COLUMN maintenance INTEGER NOT NULL DEFAULT 0 CHECK (maintenance IN (0, 1));
ALTER TABLE clients ADD COLUMN quota_bytes INTEGER CHECK (quota_bytes IS NULL OR quota_bytes > 0);
-- A draft overlay was made while its client was in maintenance: it may become
-- a version (commit), and it never becomes an ordinary persistent overlay.
ALTER TABLE overlays ADD COLUMN draft INTEGER NOT NULL DEFAULT 0 CHECK (draft IN (0, 1));
`;

export const MIGRATIONS: readonly Migration[] = Object.freeze([
  { version: 1, name: 'catalogue: images, versions, clients, overlays, unknown machines, boot events, DHCP leases', up: (db) => db.exec(V1) },
  { version: 2, name: 'maintenance clients with draft overlays; overlay quotas', up: (db) => db.exec(V2) },
]);

export const LATEST_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;
