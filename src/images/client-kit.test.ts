/**
 * The client kit's files: the pure generators, and the two scripts run for
 * real with sh (their DISKLESS_* test variables point them at temporary
 * files instead of the console, /proc and /run).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirePeers } from '../../test/helpers/peers.js';
import {
  DISKLESS_NET_SCRIPT,
  DISKLESS_UP_SCRIPT,
  KIT_INITRAMFS_MODULES,
  NETWORK_INTERFACES,
  editInitramfsConf,
  fstab,
  initramfsModulesFile,
  unsafeInterfaceStanzas,
} from './client-kit.js';
import { run } from './exec.js';

async function scratch(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-kit-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('fstab: the root by UUID, pass 0, no swap; a bad UUID is refused', () => {
  const f = fstab('0e3c8f1a-7d2b-4c55-9a61-2f4b8d7e6c10');
  const entries = f.split('\n').filter((l) => l && !l.startsWith('#'));
  assert.deepEqual(entries, ['UUID=0e3c8f1a-7d2b-4c55-9a61-2f4b8d7e6c10 / ext4 defaults,noatime 0 0']);
  assert.throws(() => fstab('not-a-uuid'));
});

test('interfaces: the kit\'s file is safe; stanzas that would manage the boot NIC are found', () => {
  assert.deepEqual(unsafeInterfaceStanzas(NETWORK_INTERFACES), []);
  assert.deepEqual(unsafeInterfaceStanzas('auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n'), ['auto eth0', 'iface eth0 inet dhcp']);
  assert.deepEqual(unsafeInterfaceStanzas('allow-hotplug enp1s0 # comment\n#auto eth1\n'), ['allow-hotplug enp1s0']);
  assert.deepEqual(unsafeInterfaceStanzas('auto lo eth0\n'), ['auto lo eth0']);
});

test('initramfs.conf is edited in place; the modules file lists the kit and extras once', () => {
  const conf = '# comment\nMODULES=most\nBUSYBOX=auto\nKEYMAP=n\nCOMPRESS=gzip\n';
  assert.equal(editInitramfsConf(conf, { modules: 'list', compress: 'zstd' }), '# comment\nMODULES=list\nBUSYBOX=y\nKEYMAP=n\nCOMPRESS=zstd\n');
  assert.equal(editInitramfsConf('MODULES=dep', { modules: 'netboot', compress: 'gzip' }), 'MODULES=netboot\nBUSYBOX=y\nCOMPRESS=gzip\n');
  const modules = initramfsModulesFile(['igc', 'nbd']).split('\n').filter((l) => l && !l.startsWith('#'));
  assert.deepEqual(modules, [...KIT_INITRAMFS_MODULES, 'igc']);
  for (const m of ['nbd', 'ext4', 'e1000', 'e1000e', 'igb', 'ixgbe', 'r8169', 'virtio_net']) assert.ok(modules.includes(m), m);
  assert.throws(() => initramfsModulesFile(['evil; rm -rf /']));
});

test('diskless-up prints the marker and POSTs to diskless.up=URL once, only for http URLs', async (t) => {
  if (!requirePeers(t, 'sh', 'curl', 'findmnt')) return;
  const dir = await scratch(t);
  const script = join(dir, 'diskless-up');
  await writeFile(script, DISKLESS_UP_SCRIPT, { mode: 0o755 });
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    res.statusCode = 204;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as { port: number }).port;
  const runWith = async (cmdline: string): Promise<{ console: string; tty: string; stdout: string }> => {
    await writeFile(join(dir, 'cmdline'), cmdline);
    await writeFile(join(dir, 'console'), '');
    await writeFile(join(dir, 'tty'), '');
    const r = await run('sh', [script], {
      env: { ...process.env, DISKLESS_CMDLINE: join(dir, 'cmdline'), DISKLESS_CONSOLE: join(dir, 'console'), DISKLESS_TTY: join(dir, 'tty') },
      timeoutMs: 60_000,
    });
    return { console: await readFile(join(dir, 'console'), 'utf8'), tty: await readFile(join(dir, 'tty'), 'utf8'), stdout: r.stdout.toString() };
  };
  const up = await runWith(`console=ttyS0 nbdroot=10.0.0.1,x,nbd0 diskless.up=http://127.0.0.1:${port}/boot/525400123456/b1/up rw\n`);
  assert.match(up.console, /^DISKLESS-UP \S+\n$/);
  assert.equal(up.tty, up.console);
  assert.match(up.stdout, /reported to http:\/\/127\.0\.0\.1/);
  assert.deepEqual(requests, ['POST /boot/525400123456/b1/up']);
  const none = await runWith('console=ttyS0 rw\n');
  assert.match(none.console, /^DISKLESS-UP /);
  const ftp = await runWith('diskless.up=ftp://127.0.0.1/x\n');
  assert.match(ftp.console, /^DISKLESS-UP /);
  assert.deepEqual(requests, ['POST /boot/525400123456/b1/up'], 'no request without an http diskless.up');
});

test('diskless-net keeps the boot NIC from networkd and NetworkManager, writes resolv.conf, names the host', async (t) => {
  if (!requirePeers(t, 'sh')) return;
  const r = await scratch(t);
  const script = join(r, 'diskless-net');
  await writeFile(script, DISKLESS_NET_SCRIPT, { mode: 0o755 });
  await mkdir(join(r, 'run'), { recursive: true });
  await mkdir(join(r, 'etc'), { recursive: true });
  await mkdir(join(r, 'sys/class/net/ens3'), { recursive: true });
  await writeFile(join(r, 'sys/class/net/ens3/address'), '52:54:00:aa:bb:cc\n');
  // As klibc's ipconfig writes it, with a hostile value from DHCP in it.
  await writeFile(
    join(r, 'run/net-ens3.conf'),
    "DEVICE='ens3'\nPROTO='dhcp'\nIPV4ADDR='10.0.2.15'\nIPV4DNS0='10.0.2.3'\nIPV4DNS1='0.0.0.0'\nDNSDOMAIN='lab.example$(touch /tmp/x)'\n",
  );
  // A stand-in for hostname(1): prints "(none)", records what it is told.
  const fakeHostname = join(r, 'fake-hostname');
  await writeFile(fakeHostname, `#!/bin/sh\nif [ $# -eq 0 ]; then echo '(none)'; else echo "$1" > "${r}/hostname-set"; fi\n`);
  await chmod(fakeHostname, 0o755);
  await run('sh', [script], { env: { ...process.env, DISKLESS_ROOT: r, DISKLESS_HOSTNAME: fakeHostname } });
  assert.equal(await readFile(join(r, 'run/systemd/network/05-diskless-boot-nic.network'), 'utf8'), '[Match]\nMACAddress=52:54:00:aa:bb:cc\n\n[Link]\nUnmanaged=yes\n');
  assert.equal(await readFile(join(r, 'run/NetworkManager/conf.d/05-diskless-boot-nic.conf'), 'utf8'), '[keyfile]\nunmanaged-devices=mac:52:54:00:aa:bb:cc\n');
  assert.equal(await readFile(join(r, 'etc/resolv.conf'), 'utf8'), 'search lab.exampletouchtmpx\nnameserver 10.0.2.3\n');
  assert.equal(await readFile(join(r, 'hostname-set'), 'utf8'), 'diskless-525400aabbcc\n');
});
