/**
 * kit/diskless-nbd-keeper outside a VM: it understands every kernel command
 * line the boot service writes (both initramfs flavours, default and other
 * ports, IPv6), and its handshake (the one it replays to give the kernel a
 * new connection) goes through against our NBD server and reports refusals
 * and non-NBD peers clearly. The reconnect itself needs the kernel's NBD
 * client: test/e2e/lifecycle.test.ts restarts the server under running
 * clients.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { kernelCommandLine, type CommandLineOptions } from '../../src/boot/kernel-cmdline.js';
import { kitDir } from '../../src/images/kit-files.js';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { startNbdServer } from '../helpers/nbd.js';
import { requirePeers } from '../helpers/peers.js';
import { join } from 'node:path';

const KEEPER = join(kitDir(), 'diskless-nbd-keeper');
const EXPORT = '525400123456-0123456789abcdef0123456789abcdef';

/** Runs the keeper without blocking this process (the NBD server under test lives in it). */
function keeper(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('perl', [KEEPER, ...args], { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      const status = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ status, stdout, stderr });
    });
  });
}

function ready(t: TestContext): boolean {
  return requirePeers(t, 'perl');
}

describe('diskless-nbd-keeper', () => {
  test('parses as perl', (t) => {
    if (!ready(t)) return;
    const r = spawnSync('perl', ['-c', KEEPER], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  test('reads the server, port and export from every command line the boot service writes', async (t) => {
    if (!ready(t)) return;
    const base: Omit<CommandLineOptions, 'flavour' | 'nbd' | 'root'> = { network: 'ipxe', initrdName: 'initrd.img', consoles: ['ttyS0,115200n8'] };
    const cases: Array<{ o: CommandLineOptions; want: string }> = [
      { o: { ...base, flavour: 'initramfs-tools', nbd: { server: '10.77.0.1', port: 10809, exportName: EXPORT }, root: { uuid: '941497b8-d5b6-4743-bf50-516b23e1b4e9' } }, want: `10.77.0.1 10809 ${EXPORT}` },
      { o: { ...base, flavour: 'initramfs-tools', nbd: { server: '10.77.0.1', port: 10900, exportName: EXPORT }, root: { partition: 1 } }, want: `10.77.0.1 10900 ${EXPORT}` },
      { o: { ...base, flavour: 'dracut', nbd: { server: '10.77.0.1', port: 10809, exportName: EXPORT }, root: { uuid: '941497b8-d5b6-4743-bf50-516b23e1b4e9' } }, want: `10.77.0.1 10809 ${EXPORT}` },
      { o: { ...base, flavour: 'dracut', nbd: { server: '10.77.0.1', port: 10811, exportName: EXPORT }, root: { partition: 0 } }, want: `10.77.0.1 10811 ${EXPORT}` },
      { o: { ...base, flavour: 'dracut', nbd: { server: '[fd00::1]', port: 10809, exportName: 'image/lab/3' }, root: { partition: 0 } }, want: 'fd00::1 10809 image/lab/3' },
    ];
    for (const { o, want } of cases) {
      const line = kernelCommandLine(o);
      const r = await keeper(['--cmdline', line, '--print-target']);
      assert.equal(r.status, 0, `${line}: ${r.stderr}`);
      assert.equal(r.stdout.trim(), want, line);
    }
    // A root that is not on NBD: nothing to keep.
    const local = await keeper(['--cmdline', 'root=UUID=941497b8-d5b6-4743-bf50-516b23e1b4e9 ro quiet', '--print-target']);
    assert.equal(local.status, 1);
    assert.equal(local.stdout.trim(), 'none');
  });

  test('goes through the handshake with our server and names a refused export', async (t) => {
    if (!ready(t)) return;
    const nbd = await startNbdServer({ [EXPORT]: { device: new MemoryDevice(8 * 1024 * 1024) } });
    t.after(() => nbd.close());
    const ok = await keeper(['--cmdline', `nbdroot=127.0.0.1:${nbd.port}/${EXPORT}`, '--probe']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), `${EXPORT} ${8 * 1024 * 1024}`);
    // The connection went through the option phase into transmission: the server opened the export, then saw it closed.
    assert.equal(nbd.resolver.opens, 1);

    const refused = await keeper(['--cmdline', `nbdroot=127.0.0.1:${nbd.port}/nope`, '--probe']);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /refused export nope/);
    assert.equal(nbd.resolver.opens, 1);
  });

  test('gives up cleanly on a peer that is not an NBD server, or no peer at all', async (t) => {
    if (!ready(t)) return;
    const garbage: Server = createServer((s) => {
      s.on('error', () => undefined); // the keeper hangs up on what it read
      s.end('HTTP/1.1 400 Bad Request\r\n\r\nnot nbd at all');
    });
    await new Promise<void>((r) => garbage.listen(0, '127.0.0.1', r));
    t.after(() => new Promise<void>((r) => garbage.close(() => r())));
    const port = (garbage.address() as { port: number }).port;
    const bad = await keeper(['--cmdline', `nbdroot=127.0.0.1:${port}/${EXPORT}`, '--probe']);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /not an NBD server/);

    const closed = await keeper(['--cmdline', `nbdroot=127.0.0.1:1/${EXPORT}`, '--probe']);
    assert.equal(closed.status, 1);
    assert.match(closed.stderr, /cannot connect to 127\.0\.0\.1 port 1/);
  });
});
