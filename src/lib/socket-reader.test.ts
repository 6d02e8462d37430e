import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { readIntoBuffers, type BufferReader } from './socket-reader.js';

/** A loopback server whose accepted sockets are paused (as the NBD server's), and a client connected to it. */
async function pair(): Promise<{ server: Server; accepted: Socket; client: Socket; close: () => Promise<void> }> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const [accepted] = (await once(server, 'connection')) as [Socket];
  await once(client, 'connect');
  return {
    server,
    accepted,
    client,
    close: async () => {
      client.destroy();
      accepted.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

test('an accepted socket reads into the buffers the reader chooses, no longer than each', async () => {
  const { accepted, client, close } = await pair();
  try {
    const small = Buffer.alloc(7);
    const big = Buffer.alloc(64 * 1024);
    const got: Buffer[] = [];
    let handedOut: Buffer | null = null;
    let calls = 0;
    const reader: BufferReader = {
      // Alternate a 7-byte buffer with a large one: every read must fit the buffer it was given.
      next: () => (handedOut = calls++ % 2 === 0 ? small : big),
      onRead: (n, buf) => {
        assert.equal(buf, handedOut, 'the read went into the buffer next() returned last');
        assert.ok(n > 0 && n <= buf.length);
        got.push(Buffer.from(buf.subarray(0, n)));
      },
    };
    assert.equal(readIntoBuffers(accepted, reader), true);
    let dataEvents = 0;
    accepted.on('data', () => dataEvents++);
    accepted.resume();
    const payload = Buffer.alloc(200_000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
    client.end(payload);
    await once(accepted, 'end');
    assert.deepEqual(Buffer.concat(got), payload);
    assert.ok(got.some((b) => b.length === 7), 'short buffers were filled to their length');
    assert.equal(dataEvents, 0);
  } finally {
    await close();
  }
});

test('pause() stops reads into the buffers and resume() restarts them', async () => {
  const { accepted, client, close } = await pair();
  try {
    const buf = Buffer.alloc(1024);
    let total = 0;
    assert.equal(
      readIntoBuffers(accepted, {
        next: () => buf,
        onRead: (n) => {
          total += n;
          accepted.pause();
        },
      }),
      true,
    );
    accepted.resume();
    client.write(Buffer.alloc(10_000, 1));
    while (total === 0) await new Promise((r) => setTimeout(r, 5));
    // Paused after the first read: nothing more arrives however long we wait.
    const first = total;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(total, first);
    assert.ok(first <= 1024);
    for (let i = 0; i < 100 && total < 10_000; i++) {
      accepted.resume();
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(total, 10_000);
  } finally {
    await close();
  }
});

test('an exception from onRead destroys that socket, not the process', async () => {
  const { accepted, client, close } = await pair();
  try {
    assert.equal(
      readIntoBuffers(accepted, {
        next: () => Buffer.alloc(16),
        onRead: () => {
          throw new Error('decoder bug');
        },
      }),
      true,
    );
    accepted.resume();
    client.write('hello');
    const [err] = (await once(accepted, 'error')) as [Error];
    assert.equal(err.message, 'decoder bug');
    assert.equal(accepted.destroyed, true);
  } finally {
    await close();
  }
});

test('a socket that is already reading, or already adopted, is left alone', async () => {
  const { accepted, close } = await pair();
  try {
    const reader: BufferReader = { next: () => Buffer.alloc(16), onRead: () => undefined };
    assert.equal(readIntoBuffers(accepted, reader), true);
    assert.equal(readIntoBuffers(accepted, reader), false);
  } finally {
    await close();
  }
  const second = await pair();
  try {
    second.accepted.resume();
    assert.equal(readIntoBuffers(second.accepted, { next: () => Buffer.alloc(16), onRead: () => undefined }), false);
  } finally {
    await second.close();
  }
});
