/**
 * The floor of a TFTP server on node:dgram, for the benchmark: the least a
 * Node.js program must do to serve a download, so a figure of the real
 * server can be read against what the runtime allows. It is not a server:
 * no timers (a window is resent only when the client repeats its ACK), no
 * limits, no path checks, files read whole into
 * memory at the request, blksize and windowsize granted as asked. Per
 * packet it does what any Node.js server must (one 'message' event, one
 * send) and nothing else: no timer, no send callback.
 *
 *   node dist/bench/tftp/floor.js ROOT PORT [ADDRESS]
 *
 * Prints `listening PORT` when ready; stops on SIGTERM.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodePacket, encodeOack, writeDataHeader, type TftpOption } from '../../src/protocols/tftp/codec.js';
import { DATA_HEADER_SIZE, OPCODES } from '../../src/protocols/tftp/constants.js';

const [root, portText, address = '127.0.0.1'] = process.argv.slice(2);
if (!root || !portText) {
  process.stderr.write('usage: floor.js ROOT PORT [ADDRESS]\n');
  process.exit(2);
}

/** Literal addresses only: answered at once, as the server's socket does. */
const lookup = (host: string, _family: unknown, cb: (err: null, address: string, family: number) => void): void => cb(null, host, 4);
const files = new Map<string, Buffer>();

function serve(data: Buffer, options: TftpOption[], to: dgram.RemoteInfo): void {
  const asked = new Map(options.map((o) => [o.name, o.value]));
  const bs = Number(asked.get('blksize') ?? 512);
  const ws = Number(asked.get('windowsize') ?? 1);
  const total = Math.floor(data.length / bs) + 1;
  const headers = Buffer.alloc(2 * ws * DATA_HEADER_SIZE);
  const socket = dgram.createSocket({ type: 'udp4', lookup: lookup as never });
  const send = (block: number): void => {
    const h = ((block - 1) % (2 * ws)) * DATA_HEADER_SIZE;
    writeDataHeader(headers, h, block & 0xffff);
    const start = (block - 1) * bs;
    socket.send([headers.subarray(h, h + DATA_HEADER_SIZE), data.subarray(start, Math.min(start + bs, data.length))], to.port, to.address);
  };
  let acked = 0;
  let started = false;
  const sendWindow = (): void => {
    for (let b = acked + 1; b <= Math.min(acked + ws, total); b++) send(b);
  };
  socket.on('message', (msg) => {
    if (msg.length < 4 || msg.readUInt16BE(0) !== OPCODES.ACK) return void socket.close();
    const n = msg.readUInt16BE(2);
    if (!started) {
      // ACK 0 answers the OACK.
      if (n !== 0) return;
      started = true;
      return sendWindow();
    }
    const distance = (n - acked) & 0xffff;
    // The same ACK again is the client's timeout: the window is resent (the floor has no timer of its own).
    if (distance === 0) return sendWindow();
    if (distance > ws) return;
    acked += distance;
    if (acked >= total) return void socket.close();
    sendWindow();
  });
  socket.bind(0, address, () => {
    const oack = options.filter((o) => o.name === 'blksize' || o.name === 'windowsize');
    if (oack.length > 0) return void socket.send([encodeOack(oack)], to.port, to.address);
    started = true;
    sendWindow();
  });
}

const listener = dgram.createSocket('udp4');
listener.on('message', (msg, from) => {
  try {
    const p = decodePacket(msg);
    if (p.opcode !== OPCODES.RRQ) return;
    let data = files.get(p.filename);
    if (!data) files.set(p.filename, (data = readFileSync(join(root, p.filename))));
    serve(data, p.options, from);
  } catch {
    // A floor: anything it cannot serve is dropped.
  }
});
listener.bind(Number(portText), address, () => process.stdout.write(`listening ${listener.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
