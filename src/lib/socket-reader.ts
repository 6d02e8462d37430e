/**
 * Reading a socket into buffers the caller chooses, for sockets a
 * net.Server accepted.
 *
 * Why. A net.Socket in its ordinary mode reads at most 64 KiB per system
 * call into a newly allocated buffer and emits it as 'data'. A 1 MiB NBD
 * write then costs sixteen allocations that V8 counts as external memory
 * (1 GB/s of them set off a major GC every few tens of milliseconds), the
 * callbacks that carry them, and a copy to gather the pieces into one
 * payload. Node's `onread` option ("net.Socket: new net.Socket([options])")
 * instead reads into a buffer the caller supplies, asking a function for the
 * buffer of each next read: a stream decoder can then have the kernel copy
 * a write's data straight into the buffer it will hand to the device, and
 * everything else into one reused buffer. Measured on the bench VM (fio
 * sequential 1 MiB writes through bench/nbd): see session.ts.
 *
 * Node offers `onread` only to sockets it constructs for connect(); a
 * server's accepted sockets are made inside net.Server. The option sets
 * three per-socket fields (kBuffer, kBufferGen, kBufferCb, symbols of
 * lib/net.js) that the socket's read path consults, and asks the handle to
 * read into the first buffer (handle.useUserBuffer). readIntoBuffers() does
 * the same to an accepted socket that has not started reading
 * (net.createServer's pauseOnConnect). It checks that the fields and the
 * handle method exist as Node 18 to 22 have them, and reports false,
 * leaving the socket untouched, when they do not (another Node, another
 * kind of stream): the caller then reads 'data' events as before.
 *
 * Contract, as for `onread`: `next()` gives the buffer the next read may
 * fill (up to its length); `onRead(n, buf)` is called with the number of
 * bytes read into `buf`, which is the buffer `next()` last returned. The
 * bytes are only valid during the call: the same memory may be read into
 * again as soon as it returns. `next()` is called after every `onRead`
 * and its buffer must stay valid (not be reused for anything else) until
 * the read into it has been delivered. 'end', 'error', 'close',
 * pause() and resume() behave as usual; 'data' is not emitted. An
 * exception from `onRead` destroys the socket with it.
 */
import type { Socket } from 'node:net';

export interface BufferReader {
  /** The buffer the next read goes into. */
  next(): Buffer;
  /** `n` bytes were read into `buf` (the buffer next() returned last). */
  onRead(n: number, buf: Buffer): void;
}

interface SocketHandle {
  reading?: boolean;
  useUserBuffer?: (buf: Uint8Array) => void;
}

/** The symbol-keyed own field of `socket` whose description is `name`, if there is exactly one. */
function field(socket: object, name: string): symbol | undefined {
  const found = Object.getOwnPropertySymbols(socket).filter((s) => s.description === name);
  return found.length === 1 ? found[0] : undefined;
}

/**
 * Makes `socket` read into the buffers `reader` chooses. True when done; false
 * (nothing changed) when this Node's sockets do not have the fields `onread`
 * uses, or the socket is already reading or holds unread data.
 */
export function readIntoBuffers(socket: Socket, reader: BufferReader): boolean {
  const handle = (socket as unknown as { _handle?: SocketHandle | null })._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function' || handle.reading === true) return false;
  if (socket.readableLength > 0 || socket.readableFlowing === true || socket.destroyed) return false;
  const kBuffer = field(socket, 'kBuffer');
  const kBufferGen = field(socket, 'kBufferGen');
  const kBufferCb = field(socket, 'kBufferCb');
  if (!kBuffer || !kBufferGen || !kBufferCb) return false;
  const fields = socket as unknown as Record<symbol, unknown>;
  // Each is null on a socket made without `onread`.
  if (fields[kBuffer] !== null || fields[kBufferGen] !== null || fields[kBufferCb] !== null) return false;
  const first = reader.next();
  fields[kBufferGen] = () => reader.next();
  fields[kBufferCb] = (n: number, buf: Buffer): boolean => {
    try {
      reader.onRead(n, buf);
    } catch (err) {
      // Thrown into Node's read path it would end the process; it ends this socket.
      socket.destroy(err as Error);
      return false;
    }
    return true;
  };
  fields[kBuffer] = first;
  handle.useUserBuffer(first);
  return true;
}
