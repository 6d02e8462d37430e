import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { clockTicksPerSecond, descendants, dirtyBytes, isAlive, isListening, isListeningBy, parseProcStat, ProcessRegistry, readProcStat, treeCpuSeconds, treeMemory } from './proc.js';

test('parses a stat line whose command name holds spaces and parentheses', () => {
  const line = '4242 (we ird) (x) S 17 4242 4242 0 -1 4194368 143 403 0 0 79 12 22 174 20 0 1 0 83932 12328960 1066 18446744073709551615';
  const s = parseProcStat(line);
  assert.equal(s.pid, 4242);
  assert.equal(s.comm, 'we ird) (x');
  assert.equal(s.state, 'S');
  assert.equal(s.ppid, 17);
  assert.deepEqual([s.utime, s.stime, s.cutime, s.cstime, s.starttime], [79, 12, 22, 174, 83932]);
  assert.throws(() => parseProcStat('garbage'), /not a \/proc stat line/);
  assert.throws(() => parseProcStat('1 (x) S 0'), /field/);
});

test('this process: its own stat, CPU seconds and memory are readable', () => {
  const s = readProcStat(process.pid);
  assert.equal(s?.pid, process.pid);
  assert.ok(clockTicksPerSecond() > 0);
  const cpu = treeCpuSeconds(process.pid);
  assert.ok(cpu !== undefined && cpu >= 0);
  const m = treeMemory(process.pid);
  assert.ok(m && m.rssKiB > 0 && m.pssKiB > 0 && m.processes >= 1);
  assert.equal(treeCpuSeconds(2 ** 22 + 1), undefined); // above pid_max's usual limit: no such process
});

test('a listening loopback port is seen in /proc/net/tcp with its owner, a closed one is not', async (t) => {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const stranger = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => {
    stranger.kill('SIGKILL');
    srv.close();
  });
  const addr = srv.address();
  assert.ok(addr && typeof addr === 'object');
  assert.equal(isListening(addr.port), true);
  assert.equal(isListeningBy(process.pid, addr.port), true);
  assert.ok(stranger.pid !== undefined);
  assert.equal(isListeningBy(stranger.pid, addr.port), false);
  await new Promise<void>((r) => srv.close(() => r()));
  assert.equal(isListening(addr.port), false);
});

test('the registry ends a child and its grandchild by pid', async () => {
  const child = spawn('sh', ['-c', 'sleep 30 & wait'], { stdio: 'ignore' });
  const pid = child.pid;
  assert.ok(pid !== undefined);
  const exited = new Promise((r) => child.once('exit', r));
  const reg = new ProcessRegistry();
  reg.add(pid);
  const deadline = Date.now() + 5000;
  while (descendants(pid).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const grand = descendants(pid);
  assert.equal(grand.length, 1);
  await reg.stop(pid);
  await exited;
  assert.equal(isAlive(grand[0]!.pid, grand[0]!.starttime), false);
  await reg.stop(pid); // a second stop of the same pid signals nothing
});

test('dirtyBytes adds Dirty and Writeback from /proc/meminfo, and is undefined when either is missing', () => {
  const meminfo = 'MemTotal:       24576000 kB\nDirty:              2048 kB\nWriteback:           512 kB\nWritebackTmp:          7 kB\n';
  assert.equal(dirtyBytes(meminfo), (2048 + 512) * 1024);
  assert.equal(dirtyBytes('MemTotal:       24576000 kB\nDirty:              2048 kB\n'), undefined);
  const live = dirtyBytes();
  assert.ok(live !== undefined && Number.isInteger(live) && live >= 0, `live value ${live}`);
});
