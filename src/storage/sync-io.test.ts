import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_SYNC_IO, SyncIoGate } from './sync-io.js';

/** A gate on a clock the test moves. */
function gateAt(policy = DEFAULT_SYNC_IO): { gate: SyncIoGate; call(ms: number, bytes?: number): void; advance(ms: number): void } {
  let now = 1000;
  const gate = new SyncIoGate(policy, () => now);
  return {
    gate,
    call(ms, bytes = 4096) {
      const started = gate.start();
      now += ms;
      gate.done(started, bytes);
    },
    advance(ms) {
      now += ms;
    },
  };
}

test('requests over maxBytes always take the thread pool; 0 turns synchronous I/O off', () => {
  const { gate } = gateAt();
  assert.equal(gate.allows(DEFAULT_SYNC_IO.maxBytes), true);
  assert.equal(gate.allows(DEFAULT_SYNC_IO.maxBytes + 1), false);
  assert.equal(new SyncIoGate({ ...DEFAULT_SYNC_IO, maxBytes: 0 }).allows(512), false);
});

test('slowStreak slow calls in a row close the gate for backoffMs, then it opens and tries again', () => {
  const g = gateAt();
  const slow = DEFAULT_SYNC_IO.slowMs + 5;
  for (let i = 0; i < DEFAULT_SYNC_IO.slowStreak - 1; i++) g.call(slow);
  assert.equal(g.gate.closed, false, 'one short of the streak');
  g.call(slow);
  assert.equal(g.gate.closed, true);
  assert.equal(g.gate.closings, 1);
  assert.equal(g.gate.allows(4096), false);
  g.advance(DEFAULT_SYNC_IO.backoffMs - 1);
  assert.equal(g.gate.allows(4096), false, 'still inside the back-off');
  g.advance(1);
  assert.equal(g.gate.allows(4096), true, 'open again after backoffMs');
  assert.equal(g.gate.closed, false);
});

test('a fast call ends a streak, and a large call gets slowMsPerMiB more before it counts as slow', () => {
  const g = gateAt();
  const slow = DEFAULT_SYNC_IO.slowMs + 5;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < DEFAULT_SYNC_IO.slowStreak - 1; i++) g.call(slow);
    g.call(0.01);
  }
  assert.equal(g.gate.closings, 0, 'lone slow calls between fast ones never close it');
  // 1 MiB in slowMs + slowMsPerMiB - 0.5 ms is not slow.
  const mib = 1024 * 1024;
  for (let i = 0; i < 2 * DEFAULT_SYNC_IO.slowStreak; i++) g.call(DEFAULT_SYNC_IO.slowMs + DEFAULT_SYNC_IO.slowMsPerMiB - 0.5, mib);
  assert.equal(g.gate.closings, 0);
});
