import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DisklessError } from './errors.js';
import { createLogger, isLevel, type LoggerOptions } from './log.js';

const NOW = new Date('2026-11-23T22:30:01.234Z');

function capture(options: LoggerOptions = {}): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger({ level: 'debug', pretty: false, now: () => NOW, write: (l) => lines.push(l), ...options }) };
}

test('one JSON object per line: time, level, msg first, then bindings, then fields', () => {
  const { lines, log } = capture();
  const child = log.child({ protocol: 'tftp', peer: '10.0.0.5' }).child({ mac: '52:54:00:00:00:0a' });
  child.info('file served', { path: 'ipxe.efi', bytes: 1024 });
  assert.equal(lines.length, 1);
  assert.ok(!lines[0]!.includes('\n'));
  const rec = JSON.parse(lines[0]!);
  assert.deepEqual(Object.keys(rec), ['time', 'level', 'msg', 'protocol', 'peer', 'mac', 'path', 'bytes']);
  assert.deepEqual(rec, { time: '2026-11-23T22:30:01.234Z', level: 'info', msg: 'file served', protocol: 'tftp', peer: '10.0.0.5', mac: '52:54:00:00:00:0a', path: 'ipxe.efi', bytes: 1024 });
});

test('levels filter; reserved names cannot overwrite time, level or msg', () => {
  const { lines, log } = capture({ level: 'warn' });
  log.info('dropped');
  log.warn('kept', { level: 'debug', msg: 'forged', time: 0 });
  assert.equal(lines.length, 1);
  const rec = JSON.parse(lines[0]!);
  assert.equal(rec.level, 'warn');
  assert.equal(rec.msg, 'kept');
  assert.equal(rec.time, NOW.toISOString());
  assert.equal(rec.level_, 'debug');
  assert.equal(rec.msg_, 'forged');
  assert.equal(rec.time_, 0);
  assert.ok(isLevel('error') && !isLevel('verbose') && !isLevel('toString'));
});

test('errors anywhere, buffers, bigints and cycles are written faithfully and never throw', () => {
  const { lines, log } = capture();
  const cause = new Error('disk gone');
  const err = new DisklessError('STORAGE_IO', 'read failed', 'EIO', { cause });
  const loop: Record<string, unknown> = { a: 1 };
  loop.self = loop;
  log.error('boom', { err, nested: { error: new TypeError('bad') }, packet: Buffer.alloc(4096), n: 2n ** 70n, loop, inf: Infinity, fn: () => 1 });
  const rec = JSON.parse(lines[0]!);
  assert.equal(rec.err.code, 'STORAGE_IO');
  assert.equal(rec.err.errno, 'EIO');
  assert.equal(rec.err.message, 'read failed');
  assert.equal(rec.err.cause.message, 'disk gone');
  assert.match(rec.err.stack, /read failed/);
  assert.equal(rec.nested.error.name, 'TypeError');
  assert.equal(rec.packet, '<Buffer 4096 bytes>');
  assert.equal(rec.n, (2n ** 70n).toString());
  assert.deepEqual(rec.loop, { a: 1, self: '[Circular]' });
  assert.equal(rec.inf, 'Infinity');
  assert.equal('fn' in rec, false);
  // Keys from the network are kept as keys, __proto__ included.
  log.info('proto', JSON.parse('{"__proto__": {"polluted": true}, "x": 1}'));
  assert.deepEqual(JSON.parse(lines[1]!).__proto__, { polluted: true });
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  // A getter that throws does not take the log call down.
  const hostile = { get x(): never { throw new Error('no'); } };
  log.info('hostile', { hostile });
  assert.equal(JSON.parse(lines[2]!).hostile, '[Unloggable]');
});

test('the terminal form is one short line with control characters escaped', () => {
  const lines: string[] = [];
  const log = createLogger({ level: 'info', pretty: true, now: () => NOW, write: (l) => lines.push(l) }, { protocol: 'tftp' });
  log.warn('transfer failed\nFAKE LINE', { file: 'a\nb\u001b[31m', err: new DisklessError('TFTP_TIMEOUT', 'no ack'), n: 3 });
  assert.equal(lines.length, 1);
  assert.equal(lines[0], '22:30:01.234 WARN  transfer failed\\nFAKE LINE  protocol=tftp file=a\\nb\\u001b[31m err=no ack (TFTP_TIMEOUT) n=3');
});

test('DISKLESS_LOG_LEVEL sets the default level; a bad value means info', () => {
  const saved = process.env.DISKLESS_LOG_LEVEL;
  try {
    for (const [env, expectDebug, expectInfo] of [['debug', true, true], ['error', false, false], ['loud', false, true]] as const) {
      process.env.DISKLESS_LOG_LEVEL = env;
      const lines: string[] = [];
      const log = createLogger({ pretty: false, write: (l) => lines.push(l) });
      log.debug('d');
      log.info('i');
      assert.equal(lines.some((l) => l.includes('"d"')), expectDebug, env);
      assert.equal(lines.some((l) => l.includes('"i"')), expectInfo, env);
    }
  } finally {
    if (saved === undefined) delete process.env.DISKLESS_LOG_LEVEL;
    else process.env.DISKLESS_LOG_LEVEL = saved;
  }
});
