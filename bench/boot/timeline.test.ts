import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { consoleCommandLine, firstMatch, LogClock, milestoneTimes, normalizeCommandLine, phaseDurations, splitPlain, type Chunk } from './timeline.js';
import { summarize, timeRatio } from './run.js';
import type { BootSample } from './stacks.js';

/** A SeaBIOS + iPXE + Debian console, cut into the pieces a poll would see, one second apart. */
const CONSOLE: Chunk[] = [
  '\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n\r\niPXE initialising devices...ok\r\n',
  '\x1b[0;1miPXE 1.0.0+\x1b[0m -- Open Source\r\nConfiguring (net0 52:54:00:be:0b:01)....',
  '.............. ok\r\nnet0: 10.77.231.50/255.255.255.0\r\nhttp://10.77.231.1:8080/ipxe/52-54-00-be-0b-01... ok\r\n',
  'http://10.77.231.1:8080/boot/52-54-00-be-0b-01/abc/vmlinuz... ok\r\nhttp://10.77.231.1:8080/boot/52-54-00-be-0b-01/abc/initrd.img... 59\r\n%',
  '     ok\r\n[    0.000000] Linux version 6.1.0-50-amd64\r\n[    0.000000] Command line: initrd=initrd.img nbdroot=10.77.231.1,tok-1,nbd0 rw diskless.up=http://10.77.231.1:8080/boot/x/y/up\r\n',
  '[   15.506244] nbd0: detected capacity change from 0 to 8388608\r\n[   16.856206] EXT4-fs (nbd0p1): mounted filesystem with ordered data mode.\r\n',
  'Welcome to \x1b[1mDebian GNU/Linux 12 (bookworm)\x1b[0m!\r\n',
  '[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m - Multi-User System.\r\nDISKLESS-UP /dev/nbd0p1\r\n',
].map((raw, i) => ({ t: 1000 * (i + 1), text: splitPlain('', raw).text }));

describe('bench/boot timeline: milestones from logs as they grow', () => {
  test('splitPlain removes terminal escapes and keeps one cut by a read for the next', () => {
    const a = splitPlain('', 'ok\x1b[0;3');
    assert.deepEqual(a, { text: 'ok', carry: '\x1b[0;3' });
    const b = splitPlain(a.carry, '2mgreen\x1b[0m\r\n');
    assert.deepEqual(b, { text: 'green\n', carry: '' });
    assert.equal(splitPlain('', '\x1bcSeaBIOS').text, 'SeaBIOS');
  });

  test('a milestone takes the time of the piece holding the end of its match, across line breaks', () => {
    const t = milestoneTimes(CONSOLE, 0);
    assert.deepEqual(t, {
      ipxe: 1, 'ipxe-dhcp': 3, script: 3, kernel: 4, initrd: 5, linux: 5, nbd: 6, root: 6, systemd: 7, 'multi-user': 8, marker: 8,
    });
    assert.equal(firstMatch(CONSOLE, /nothing like this/), undefined);
    const p = phaseDurations(t);
    assert.equal(p['firmware-dhcp'], 3);
    assert.equal(p['to-nbd'], 1);
    assert.equal(p.userspace, 1);
    assert.equal(Object.values(p).reduce((a, b) => a + b, 0), t.marker, 'the phases add up to the total');
  });

  test('the command line is read from the console and compared without the export name and boot path', () => {
    const line = consoleCommandLine(CONSOLE)!;
    assert.match(line, /^initrd=initrd\.img nbdroot=10\.77\.231\.1,tok-1,nbd0/);
    const other = line.replace('tok-1', 'debian12').replace('/boot/x/y/up', '/boot/mac/reference/up');
    assert.equal(normalizeCommandLine(line), normalizeCommandLine(other));
    assert.notEqual(normalizeCommandLine(line), normalizeCommandLine(other.replace('rw', 'ro')));
  });

  test('LogClock stamps what a file gains with the clock of the poll that saw it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dl-logclock-'));
    try {
      const path = join(dir, 'serial');
      let now = 100;
      const clock = new LogClock({ serial: path }, 50, () => now);
      clock.poll(); // the file does not exist yet
      appendFileSync(path, 'iPXE initialising devices...ok\r\nConfiguring (net0 x)...');
      clock.poll();
      now = 200;
      appendFileSync(path, '\x1b[0');
      clock.poll();
      now = 300;
      appendFileSync(path, 'm ok\n');
      clock.stop();
      const chunks = clock.chunks('serial');
      assert.deepEqual(chunks.map((c) => c.t), [100, 300]);
      assert.deepEqual(milestoneTimes(chunks, 0), { ipxe: 0.1, 'ipxe-dhcp': 0.3 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('summaries: means per stack and firmware, ours/reference as a ratio of times', () => {
    const sample = (stack: 'diskless' | 'reference', totalS: number, ok = true): BootSample => ({
      stack, firmware: 'bios', round: 1, ok, startedAt: '', load: 0, ...(ok ? { totalS } : {}),
      serial: { marker: totalS }, phases: { userspace: totalS / 2 }, server: {},
      commandLine: `nbdroot=s,${stack},nbd0 rw`,
    });
    const s = summarize([sample('diskless', 100), sample('diskless', 120), sample('reference', 200), sample('reference', 1, false)]);
    assert.deepEqual(s.cells.bios?.diskless, { boots: 2, failed: 0, meanS: 110, minS: 100, maxS: 120, phases: { userspace: 55 }, server: {} });
    assert.equal(s.cells.bios?.reference?.failed, 1);
    assert.equal(s.ratios.bios, 0.55);
    assert.equal(s.phaseRatios.bios?.userspace, 0.55);
    assert.deepEqual(s.commandLinesEqual, { bios: true });
    // The EFI stub puts the image name first: lines are compared within a firmware only.
    const uefi = (stack: 'diskless' | 'reference', line: string): BootSample => ({ ...sample(stack, 90), firmware: 'uefi', commandLine: line });
    const both = summarize([sample('diskless', 100), sample('reference', 100), uefi('diskless', 'vmlinuz nbdroot=s,a,nbd0 rw'), uefi('reference', 'vmlinuz nbdroot=s,b,nbd0 ro')]);
    assert.deepEqual(both.commandLinesEqual, { bios: true, uefi: false });
    assert.equal(timeRatio(1, 0), undefined);
  });
});
