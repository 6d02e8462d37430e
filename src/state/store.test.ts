import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDisklessError } from '../lib/errors.js';
import { MIGRATIONS, type Migration } from './migrations.js';
import { DB_FILE, LATEST_SCHEMA_VERSION, Store } from './store.js';

const SHA = 'a'.repeat(64);

function throwsCode(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isDisklessError(err, code), `expected ${code}, got ${(err as { code?: string }).code}: ${(err as Error).message}`);
    if (message) assert.match((err as Error).message, message);
    return true;
  });
}

let dir: string;
let store: Store;
let clock = 1_700_000_000_000;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-store-'));
  store = Store.open(join(dir, 'data'), { now: () => clock });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function addImage(name = 'debian12', versions = 1): void {
  store.images.create(name);
  for (let v = 1; v <= versions; v++) {
    store.images.addVersion({ image: name, version: v, path: `images/${name}/${v}.raw`, size: 1 << 20, sha256: SHA, published: true });
    store.images.publish(name, v);
  }
}

describe('opening and migrations', () => {
  test('creates the data directory and a private database in WAL mode with foreign keys on', () => {
    const st = statSync(join(dir, 'data', DB_FILE));
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'data')).mode & 0o777, 0o750);
    assert.deepEqual(store.guard('t', () => store.stmt('PRAGMA journal_mode').get()), { journal_mode: 'wal' });
    assert.deepEqual(store.guard('t', () => store.stmt('PRAGMA foreign_keys').get()), { foreign_keys: 1 });
  });

  test('migrations run once: reopening changes nothing and records nothing new', () => {
    assert.equal(store.schemaVersion(), LATEST_SCHEMA_VERSION);
    const before = store.appliedMigrations();
    assert.equal(before.length, MIGRATIONS.length);
    addImage();
    store.close();
    clock += 1000;
    store = Store.open(join(dir, 'data'), { now: () => clock });
    assert.deepEqual(store.appliedMigrations(), before, 'no step ran again');
    assert.equal(store.images.require('debian12').currentVersion, 1, 'data kept');
  });

  test('a new step is applied to an existing database and recorded', () => {
    addImage();
    store.close();
    const extra: Migration = { version: MIGRATIONS.length + 1, name: 'test: a column', up: (db) => db.exec('ALTER TABLE images ADD COLUMN note TEXT') };
    store = Store.open(join(dir, 'data'), { migrations: [...MIGRATIONS, extra] });
    assert.equal(store.schemaVersion(), MIGRATIONS.length + 1);
    assert.equal(store.appliedMigrations().at(-1)!.name, 'test: a column');
    assert.equal(store.images.require('debian12').name, 'debian12');
  });

  test('a failing step rolls back every step of that run', () => {
    store.close();
    rmSync(join(dir, 'data'), { recursive: true });
    const bad: Migration = {
      version: MIGRATIONS.length + 1,
      name: 'test: broken',
      up: (db) => {
        db.exec('CREATE TABLE half_done (x INTEGER)');
        db.exec('THIS IS NOT SQL');
      },
    };
    throwsCode(() => Store.open(join(dir, 'data'), { migrations: [...MIGRATIONS, bad] }), 'STATE_MIGRATION_FAILED', /test: broken/);
    store = Store.open(join(dir, 'data'));
    assert.equal(store.schemaVersion(), LATEST_SCHEMA_VERSION, 'the good steps ran on the second open');
    throwsCode(() => store.guard('t', () => store.stmt('SELECT * FROM half_done').all()), 'STATE_IO', /no such table/);
  });

  test('a database from a newer diskless is refused and left alone', () => {
    store.close();
    const extra: Migration = { version: MIGRATIONS.length + 1, name: 'future', up: (db) => db.exec('CREATE TABLE future (x INTEGER)') };
    Store.open(join(dir, 'data'), { migrations: [...MIGRATIONS, extra] }).close();
    throwsCode(() => Store.open(join(dir, 'data')), 'STATE_SCHEMA_TOO_NEW', new RegExp(`schema version ${MIGRATIONS.length + 1};`));
    store = Store.open(join(dir, 'data'), { migrations: [...MIGRATIONS, extra] });
    assert.equal(store.schemaVersion(), MIGRATIONS.length + 1);
  });

  test('a file that is not a database is STATE_OPEN_FAILED', async () => {
    store.close();
    const { writeFileSync } = await import('node:fs');
    const other = join(dir, 'junk');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(other);
    writeFileSync(join(other, DB_FILE), Buffer.alloc(4096, 0x5a));
    throwsCode(() => Store.open(other), 'STATE_OPEN_FAILED');
    store = Store.open(join(dir, 'data'));
  });

  test('a closed store says so', () => {
    store.close();
    throwsCode(() => store.images.list(), 'STATE_CLOSED');
    store = Store.open(join(dir, 'data'));
  });

  test('a writer blocked by another process past the busy timeout gets STATE_BUSY', () => {
    const other = Store.open(join(dir, 'data'), { busyTimeoutMs: 50 });
    try {
      store.guard('t', () => store.stmt('BEGIN IMMEDIATE').run());
      throwsCode(() => other.images.create('blocked'), 'STATE_BUSY');
      store.guard('t', () => store.stmt('ROLLBACK').run());
      assert.equal(other.images.create('blocked').name, 'blocked');
    } finally {
      other.close();
    }
  });
});

describe('images and versions', () => {
  test('names are unique and checked', () => {
    store.images.create('debian12');
    throwsCode(() => store.images.create('debian12'), 'STATE_CONFLICT');
    throwsCode(() => store.images.create('Debian 12'), 'STATE_INVALID');
    throwsCode(() => store.images.create('../etc'), 'STATE_INVALID');
    throwsCode(() => store.images.create(''), 'STATE_INVALID');
    // The schema refuses what the method would, even from raw SQL.
    throwsCode(() => store.guard('raw', () => store.stmt("INSERT INTO images (name, created_ms) VALUES ('A/B', 0)").run()), 'STATE_INVALID');
  });

  test('versions number from 1, are unique per image, and need a valid sha256', () => {
    store.images.create('debian12');
    assert.equal(store.images.nextVersion('debian12'), 1);
    store.images.addVersion({ image: 'debian12', version: 1, path: 'images/debian12/1.raw', size: 4096, sha256: SHA });
    assert.equal(store.images.nextVersion('debian12'), 2);
    throwsCode(() => store.images.addVersion({ image: 'debian12', version: 1, path: 'images/debian12/1b.raw', size: 4096, sha256: SHA }), 'STATE_CONFLICT');
    throwsCode(() => store.images.addVersion({ image: 'debian12', version: 2, path: 'images/debian12/2.raw', size: 4096, sha256: 'xyz' }), 'STATE_INVALID');
    throwsCode(() => store.images.addVersion({ image: 'debian12', version: 2, path: '/abs/2.raw', size: 4096, sha256: SHA }), 'STATE_INVALID');
    throwsCode(() => store.images.addVersion({ image: 'nope', version: 1, path: 'x', size: 4096, sha256: SHA }), 'STATE_NOT_FOUND');
  });

  test('the current version must be a published one', () => {
    store.images.create('debian12');
    store.images.addVersion({ image: 'debian12', version: 1, path: 'images/debian12/1.raw', size: 4096, sha256: SHA });
    throwsCode(() => store.images.setCurrent('debian12', 1), 'STATE_INVALID', /not published/);
    throwsCode(() => store.guard('raw', () => store.stmt("UPDATE images SET current_version = 1 WHERE name = 'debian12'").run()), 'STATE_INVALID', /published/);
    assert.equal(store.images.current('debian12'), null);
    const v = store.images.publish('debian12', 1);
    assert.equal(v.published, true);
    assert.equal(store.images.current('debian12')!.version, 1);
    throwsCode(() => store.images.setCurrent('debian12', 7), 'STATE_NOT_FOUND');
  });

  test('a published version never changes, but its boot info can be filled in', () => {
    addImage();
    const v = store.images.version('debian12', 1)!;
    for (const sql of ['UPDATE image_versions SET size = 1', "UPDATE image_versions SET sha256 = '" + 'b'.repeat(64) + "'", 'UPDATE image_versions SET published = 0', "UPDATE image_versions SET path = 'x'"]) {
      throwsCode(() => store.guard('raw', () => store.stmt(sql).run()), 'STATE_IMMUTABLE', /never changes/);
    }
    const after = store.images.setBootInfo(v.id, { kernels: ['/boot/vmlinuz-6.1'], initramfs: ['/boot/initrd.img-6.1'] });
    assert.deepEqual(after.bootInfo, { kernels: ['/boot/vmlinuz-6.1'], initramfs: ['/boot/initrd.img-6.1'] });
    assert.equal(after.sha256, v.sha256);
    throwsCode(() => store.guard('raw', () => store.stmt("UPDATE image_versions SET boot_info = 'not json'").run()), 'STATE_INVALID');
  });

  test('a version in use cannot be deleted', () => {
    addImage();
    throwsCode(() => store.guard('raw', () => store.stmt('DELETE FROM image_versions').run()), 'STATE_CONFLICT');
  });
});

describe('clients', () => {
  test('MACs are normalized and unique; names unique; image and pin must exist', () => {
    addImage('debian12', 2);
    const c = store.clients.add({ mac: '52-54-00-AB-CD-EF', image: 'debian12', name: 'pc-01' });
    assert.equal(c.mac, '52:54:00:ab:cd:ef');
    assert.equal(c.mode, 'ephemeral');
    assert.equal(c.state, 'new');
    assert.equal(store.clients.get('525400ABCDEF')!.id, c.id);
    throwsCode(() => store.clients.add({ mac: '52:54:00:ab:cd:ef', image: 'debian12' }), 'STATE_CONFLICT');
    throwsCode(() => store.clients.add({ mac: '52:54:00:ab:cd:00', image: 'debian12', name: 'pc-01' }), 'STATE_CONFLICT');
    throwsCode(() => store.clients.add({ mac: 'nope', image: 'debian12' }), 'STATE_INVALID');
    throwsCode(() => store.clients.add({ mac: '52:54:00:ab:cd:01', image: 'other' }), 'STATE_NOT_FOUND');
    throwsCode(() => store.clients.add({ mac: '52:54:00:ab:cd:02', image: 'debian12', pinnedVersion: 9 }), 'STATE_NOT_FOUND');
    throwsCode(() => store.clients.add({ mac: '52:54:00:ab:cd:03', image: 'debian12', mode: 'weird' as never }), 'STATE_INVALID');
    throwsCode(() => store.clients.add({ mac: '52:54:00:ab:cd:04', image: 'debian12', name: 'has space' }), 'STATE_INVALID');
    assert.equal(store.clients.add({ mac: '52:54:00:ab:cd:05', image: 'debian12', pinnedVersion: 1, mode: 'persistent' }).pinnedVersion, 1);
    assert.deepEqual(store.clients.list().map((x) => x.mac), ['52:54:00:ab:cd:05', '52:54:00:ab:cd:ef']);
    throwsCode(() => store.guard('raw', () => store.stmt("INSERT INTO clients (mac, image_id, mode, created_ms, updated_ms) VALUES ('52:54:00:AB:CD:EE', 1, 'ephemeral', 0, 0)").run()), 'STATE_INVALID');
  });

  test('adding a client takes it off the unknown machines, in the same transaction', () => {
    addImage();
    assert.equal(store.unknownMachines.seen('52:54:00:00:00:01', { arch: 'x64-uefi' })!.attempts, 1);
    clock += 5;
    const again = store.unknownMachines.seen('52:54:00:00:00:01')!;
    assert.equal(again.attempts, 2);
    assert.equal(again.arch, 'x64-uefi');
    assert.equal(again.lastSeenMs - again.firstSeenMs, 5);
    store.clients.add({ mac: '52:54:00:00:00:01', image: 'debian12' });
    assert.equal(store.unknownMachines.get('52:54:00:00:00:01'), null);
    assert.equal(store.unknownMachines.seen('52:54:00:00:00:01'), null, 'a known client is not unknown');
  });

  test('boots: begin, bind the address once, end', () => {
    addImage();
    store.clients.add({ mac: '52:54:00:00:00:01', image: 'debian12' });
    const v = store.images.current('debian12')!;
    const token = '0123456789abcdef0123456789abcdef';
    const c = store.clients.beginBoot('52:54:00:00:00:01', { versionId: v.id, bootId: 'b1', token });
    assert.equal(c.state, 'booting');
    assert.equal(c.bootVersion, 1);
    assert.equal(c.bootToken, token);
    assert.equal(c.bootAddress, null);
    assert.equal(store.clients.bindAddress('52:54:00:00:00:01', 'old-boot', '10.0.0.5'), false, 'not the current boot');
    assert.equal(store.clients.bindAddress('52:54:00:00:00:01', 'b1', '10.0.0.5'), true);
    assert.equal(store.clients.bindAddress('52:54:00:00:00:01', 'b1', '10.0.0.6'), false, 'bound once');
    assert.equal(store.clients.require('52:54:00:00:00:01').bootAddress, '10.0.0.5');
    throwsCode(() => store.clients.beginBoot('52:54:00:00:00:01', { versionId: v.id, bootId: 'b2', token: 'short' }), 'STATE_INVALID');
    throwsCode(() => store.clients.beginBoot('52:54:00:00:00:01', { versionId: v.id, bootId: 'no/slash', token }), 'STATE_INVALID');
    const ended = store.clients.endBoot('52:54:00:00:00:01');
    assert.equal(ended.bootToken, null);
    assert.equal(ended.bootAddress, null);
    assert.equal(ended.state, 'new');
    assert.equal(ended.lastAddress, '10.0.0.5', 'the last known address stays');
    throwsCode(() => store.clients.beginBoot('52:54:00:00:00:99', { versionId: v.id, bootId: 'b', token }), 'STATE_NOT_FOUND');
  });

  test('update changes image, pin and mode; changing the image drops a pin', () => {
    addImage('debian12', 2);
    addImage('ubuntu', 1);
    store.clients.add({ mac: '52:54:00:00:00:01', image: 'debian12', pinnedVersion: 2 });
    const u = store.clients.update('52:54:00:00:00:01', { image: 'ubuntu', mode: 'persistent' });
    assert.equal(u.image, 'ubuntu');
    assert.equal(u.pinnedVersion, null);
    assert.equal(u.mode, 'persistent');
    throwsCode(() => store.clients.update('52:54:00:00:00:01', { pinnedVersion: 2 }), 'STATE_NOT_FOUND');
  });
});

describe('overlays', () => {
  test('one per client, numbered directories, gone with the client', () => {
    addImage();
    const c = store.clients.add({ mac: '52:54:00:00:00:01', image: 'debian12' });
    const v = store.images.current('debian12')!;
    const dirFor = (mac: string, seq: number): string => `overlays/${mac.replace(/:/g, '')}/${seq}`;
    const o1 = store.overlays.create(c.id, v.id, dirFor);
    assert.equal(o1.dir, 'overlays/525400000001/1');
    assert.equal(o1.version, 1);
    assert.equal(o1.mac, '52:54:00:00:00:01');
    throwsCode(() => store.overlays.create(c.id, v.id, dirFor), 'STATE_CONFLICT');
    assert.equal(store.overlays.remove(o1.id), true);
    assert.equal(store.overlays.remove(o1.id), false);
    const o2 = store.overlays.create(c.id, v.id, dirFor);
    assert.equal(o2.dir, 'overlays/525400000001/2', 'a new overlay never reuses a directory');
    assert.ok(o2.id > o1.id, 'nor an id');
    assert.equal(store.overlays.forClient(c.id)!.id, o2.id);
    assert.equal(store.clients.remove('52:54:00:00:00:01'), true);
    assert.deepEqual(store.overlays.list(), []);
  });
});

describe('transactions', () => {
  test('all or nothing', () => {
    addImage();
    assert.throws(() =>
      store.transaction(() => {
        store.clients.add({ mac: '52:54:00:00:00:01', image: 'debian12' });
        store.images.create('second');
        throw new Error('changed my mind');
      }), /changed my mind/);
    assert.equal(store.clients.get('52:54:00:00:00:01'), null);
    assert.equal(store.images.get('second'), null);
  });
});

describe('boot events', () => {
  test('recorded with JSON detail, listed oldest first, newest N', () => {
    for (let i = 0; i < 5; i++) {
      clock += 10;
      store.events.record({ mac: '52:54:00:00:00:01', step: 'dhcp-discover', detail: { xid: i } });
    }
    store.events.record({ mac: '52:54:00:00:00:02', step: 'tftp', bootId: 'b9' });
    const last3 = store.events.list({ mac: '52:54:00:00:00:01', limit: 3 });
    assert.deepEqual(last3.map((e) => e.detail), [{ xid: 2 }, { xid: 3 }, { xid: 4 }]);
    assert.equal(store.events.list({ bootId: 'b9' })[0]!.step, 'tftp');
    throwsCode(() => store.events.record({ mac: '52:54:00:00:00:01', step: 'coffee' as never }), 'STATE_INVALID');
    throwsCode(() => store.events.record({ mac: '52:54:00:00:00:01', step: 'tftp', detail: [1] as never }), 'STATE_INVALID');
    assert.equal(store.events.pruneBefore(clock - 15), 3);
    assert.equal(store.events.list().length, 3);
  });
});

describe('DHCP leases', () => {
  test('save is an upsert keyed by address; states are checked', () => {
    const lease = { address: '10.0.0.10', subnet: '10.0.0.0/24', mac: '52:54:00:00:00:01', clientKey: '01525400000001', state: 'active' as const, expiresMs: 5000, updatedMs: 1000, hostName: null };
    store.leases.save(lease);
    store.leases.save({ ...lease, state: 'released', updatedMs: 2000 });
    assert.deepEqual(store.leases.list(), [{ ...lease, state: 'released', updatedMs: 2000 }]);
    store.leases.save({ ...lease, address: '10.0.0.11', mac: '', clientKey: '', state: 'declined' });
    assert.equal(store.leases.forMac('52:54:00:00:00:01').length, 1);
    throwsCode(() => store.leases.save({ ...lease, state: 'bound' as never }), 'STATE_INVALID');
    assert.equal(store.leases.remove('10.0.0.10'), true);
    assert.equal(store.leases.get('10.0.0.10'), null);
  });
});
