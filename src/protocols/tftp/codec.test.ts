import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodePacket, encodeAck, encodeData, encodeError, encodeOack, encodeRequest, writeDataHeader, type TftpPacket,
} from './codec.js';
import { OPCODES } from './constants.js';
import { TftpCodecError } from './errors.js';

/** Bytes from a readable description: strings become their ASCII bytes, numbers single bytes. */
function bytes(...parts: Array<string | number>): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from([p]))));
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TftpCodecError, `expected a TftpCodecError, got ${String(err)}`);
    return err.code;
  }
  assert.fail('no error thrown');
}

test('RRQ without options: fixture bytes', () => {
  const wire = bytes(0, 1, 'undionly.kpxe', 0, 'octet', 0);
  assert.deepEqual(decodePacket(wire), { opcode: OPCODES.RRQ, filename: 'undionly.kpxe', mode: 'octet', options: [] });
  assert.deepEqual(encodeRequest(OPCODES.RRQ, 'undionly.kpxe', 'octet'), wire);
});

test('RRQ with options: names and mode are case-insensitive, values kept as sent', () => {
  const wire = bytes(0, 1, 'pxelinux.cfg/default', 0, 'OCTET', 0, 'BLKSIZE', 0, '1468', 0, 'tsize', 0, '0', 0, 'WindowSize', 0, '4', 0);
  assert.deepEqual(decodePacket(wire), {
    opcode: OPCODES.RRQ,
    filename: 'pxelinux.cfg/default',
    mode: 'octet',
    options: [{ name: 'blksize', value: '1468' }, { name: 'tsize', value: '0' }, { name: 'windowsize', value: '4' }],
  });
});

test('WRQ decodes (the server refuses it, the codec does not)', () => {
  const p = decodePacket(bytes(0, 2, 'upload.bin', 0, 'netascii', 0));
  assert.equal(p.opcode, OPCODES.WRQ);
});

test('trailing NUL padding after a request is tolerated', () => {
  const p = decodePacket(bytes(0, 1, 'a', 0, 'octet', 0, 0, 0, 0, 0));
  assert.deepEqual(p, { opcode: OPCODES.RRQ, filename: 'a', mode: 'octet', options: [] });
});

test('no NUL terminator: file name, mode, option name, option value, error message', () => {
  assert.equal(codeOf(() => decodePacket(bytes(0, 1, 'undionly.kpxe'))), 'TFTP_MISSING_NUL');
  assert.equal(codeOf(() => decodePacket(bytes(0, 1, 'a', 0, 'octet'))), 'TFTP_MISSING_NUL');
  assert.equal(codeOf(() => decodePacket(bytes(0, 1, 'a', 0, 'octet', 0, 'blksize', 0, '1468'))), 'TFTP_MISSING_NUL');
  assert.equal(codeOf(() => decodePacket(bytes(0, 1, 'a', 0, 'octet', 0, 'blksize'))), 'TFTP_MISSING_NUL');
  assert.equal(codeOf(() => decodePacket(bytes(0, 5, 0, 1, 'File not found'))), 'TFTP_MISSING_NUL');
  assert.equal(codeOf(() => decodePacket(bytes(0, 6, 'blksize', 0, '512'))), 'TFTP_MISSING_NUL');
});

test('an option without a value, or with an empty name, is a bad option', () => {
  assert.equal(codeOf(() => decodePacket(bytes(0, 1, 'a', 0, 'octet', 0, 'blksize', 0))), 'TFTP_BAD_OPTION');
  assert.equal(codeOf(() => decodePacket(bytes(0, 1, 'a', 0, 'octet', 0, 0, '512', 0))), 'TFTP_BAD_OPTION');
});

test('duplicated options, in any case, are refused', () => {
  const wire = bytes(0, 1, 'a', 0, 'octet', 0, 'blksize', 0, '512', 0, 'BlkSize', 0, '1468', 0);
  assert.equal(codeOf(() => decodePacket(wire)), 'TFTP_DUPLICATE_OPTION');
});

test('bad modes are refused', () => {
  for (const mode of ['binary', 'ascii', '', 'octet ', 'netascii\x01']) {
    assert.equal(codeOf(() => decodePacket(bytes(0, 1, 'a', 0, mode, 0))), 'TFTP_BAD_MODE', mode);
  }
  assert.equal((decodePacket(bytes(0, 1, 'a', 0, 'NetAscii', 0)) as { mode: string }).mode, 'netascii');
  assert.equal((decodePacket(bytes(0, 2, 'a', 0, 'mail', 0)) as { mode: string }).mode, 'mail');
});

test('a file name that is not UTF-8 is a bad path', () => {
  assert.equal(codeOf(() => decodePacket(bytes(0, 1, 0xff, 0xfe, 0, 'octet', 0))), 'TFTP_BAD_PATH');
  assert.equal((decodePacket(bytes(0, 1, 'caf', 0xc3, 0xa9, 0, 'octet', 0)) as { filename: string }).filename, 'café');
});

test('unknown opcodes and truncated packets', () => {
  for (const op of [0, 7, 8, 255, 0xffff]) {
    assert.equal(codeOf(() => decodePacket(Buffer.from([op >> 8, op & 255, 0, 1]))), 'TFTP_UNKNOWN_OPCODE', String(op));
  }
  assert.equal(codeOf(() => decodePacket(Buffer.alloc(0))), 'TFTP_TRUNCATED');
  assert.equal(codeOf(() => decodePacket(Buffer.from([0]))), 'TFTP_TRUNCATED');
  assert.equal(codeOf(() => decodePacket(Buffer.from([0, 3, 0]))), 'TFTP_TRUNCATED');
  assert.equal(codeOf(() => decodePacket(Buffer.from([0, 4, 1]))), 'TFTP_TRUNCATED');
  assert.equal(codeOf(() => decodePacket(Buffer.from([0, 5, 0]))), 'TFTP_TRUNCATED');
});

test('DATA: block number and a view of the payload; empty payload allowed', () => {
  const wire = bytes(0, 3, 0xff, 0xfe, 'hello');
  const p = decodePacket(wire);
  assert.equal(p.opcode, OPCODES.DATA);
  if (p.opcode !== OPCODES.DATA) return;
  assert.equal(p.block, 65534);
  assert.equal(p.data.toString(), 'hello');
  assert.equal(p.data.buffer, wire.buffer, 'the payload is a view, not a copy');
  assert.deepEqual(encodeData(65534, Buffer.from('hello')), wire);
  const empty = decodePacket(bytes(0, 3, 0, 0));
  assert.equal(empty.opcode === OPCODES.DATA && empty.data.length, 0);
});

test('ACK: fixture bytes; trailing bytes ignored', () => {
  assert.deepEqual(encodeAck(0x1234), bytes(0, 4, 0x12, 0x34));
  assert.deepEqual(decodePacket(bytes(0, 4, 0x12, 0x34)), { opcode: OPCODES.ACK, block: 0x1234 });
  assert.deepEqual(decodePacket(bytes(0, 4, 0, 7, 0, 0)), { opcode: OPCODES.ACK, block: 7 });
});

test('ERROR: fixture bytes; messages limited to printable ASCII', () => {
  const wire = bytes(0, 5, 0, 1, 'File not found', 0);
  assert.deepEqual(encodeError(1, 'File not found'), wire);
  assert.deepEqual(decodePacket(wire), { opcode: OPCODES.ERROR, code: 1, message: 'File not found' });
  assert.deepEqual(encodeError(0, 'bad\x00name\u00e9'), bytes(0, 5, 0, 0, 'bad?name?', 0));
});

test('OACK: fixture bytes', () => {
  const wire = bytes(0, 6, 'blksize', 0, '1468', 0, 'tsize', 0, '1048576', 0);
  assert.deepEqual(encodeOack([{ name: 'blksize', value: '1468' }, { name: 'tsize', value: '1048576' }]), wire);
  assert.deepEqual(decodePacket(wire), { opcode: OPCODES.OACK, options: [{ name: 'blksize', value: '1468' }, { name: 'tsize', value: '1048576' }] });
});

test('writeDataHeader writes opcode and the 16-bit block in place', () => {
  const b = Buffer.alloc(8, 0xaa);
  writeDataHeader(b, 2, 0xbeef);
  assert.deepEqual(b, Buffer.from([0xaa, 0xaa, 0, 3, 0xbe, 0xef, 0xaa, 0xaa]));
  assert.throws(() => writeDataHeader(b, 0, 65536));
  assert.throws(() => encodeAck(-1));
});

test('encoders refuse fields with NUL bytes', () => {
  assert.equal(codeOf(() => encodeRequest(OPCODES.RRQ, 'a\0b', 'octet')), 'TFTP_MISSING_NUL');
  assert.equal(codeOf(() => encodeOack([{ name: 'blksize', value: '1\0' }])), 'TFTP_MISSING_NUL');
});

test('round trips of every packet kind', () => {
  const packets: TftpPacket[] = [
    { opcode: OPCODES.RRQ, filename: 'dir/file.bin', mode: 'octet', options: [] },
    { opcode: OPCODES.RRQ, filename: 'x', mode: 'netascii', options: [{ name: 'tsize', value: '0' }, { name: 'timeout', value: '3' }] },
    { opcode: OPCODES.WRQ, filename: 'y', mode: 'mail', options: [] },
    { opcode: OPCODES.ACK, block: 0 },
    { opcode: OPCODES.ACK, block: 65535 },
    { opcode: OPCODES.ERROR, code: 8, message: 'option refused' },
    { opcode: OPCODES.OACK, options: [{ name: 'windowsize', value: '4' }] },
  ];
  for (const p of packets) {
    let wire: Buffer;
    switch (p.opcode) {
      case OPCODES.RRQ:
      case OPCODES.WRQ:
        wire = encodeRequest(p.opcode, p.filename, p.mode, p.options);
        break;
      case OPCODES.ACK:
        wire = encodeAck(p.block);
        break;
      case OPCODES.ERROR:
        wire = encodeError(p.code, p.message);
        break;
      case OPCODES.OACK:
        wire = encodeOack(p.options);
        break;
      default:
        throw new Error('unreachable');
    }
    assert.deepEqual(decodePacket(wire), p);
  }
  for (const size of [0, 1, 511, 512, 1468]) {
    const data = Buffer.alloc(size, size & 0xff);
    const p = decodePacket(encodeData(size, data));
    assert.ok(p.opcode === OPCODES.DATA && p.block === size && p.data.equals(data));
  }
});

/*
 * Bytes captured from real firmware (QEMU 7.2 user networking, packets
 * dumped with `-object filter-dump`): OVMF 2022.11's own PXE client and the
 * iPXE 1.0.0+git-20190125 ROM of Debian 12's ipxe-qemu.
 */
const FIRMWARE = {
  /** OVMF first asks for the size... */
  ovmfProbe: '0001626f6f742e656669006f63746574007473697a65003000626c6b73697a6500313436380077696e646f7773697a65003400',
  /** ...then ends that exchange with ERROR 8 once it has the OACK... */
  ovmfAbort: '00050008557365722061626f7274656420746865207472616e7366657200',
  /** ...and asks again, from a new port, without tsize. */
  ovmfTransfer: '0001626f6f742e656669006f6374657400626c6b73697a6500313436380077696e646f7773697a65003400',
  /** iPXE asks for blksize 1432 and tsize in one request. */
  ipxeRequest: '0001626f6f742e707865006f6374657400626c6b73697a650031343332007473697a65003000',
} as const;

test('real firmware requests decode (OVMF tsize probe and transfer, iPXE)', () => {
  assert.deepEqual(decodePacket(Buffer.from(FIRMWARE.ovmfProbe, 'hex')), {
    opcode: OPCODES.RRQ, filename: 'boot.efi', mode: 'octet',
    options: [{ name: 'tsize', value: '0' }, { name: 'blksize', value: '1468' }, { name: 'windowsize', value: '4' }],
  });
  assert.deepEqual(decodePacket(Buffer.from(FIRMWARE.ovmfAbort, 'hex')), { opcode: OPCODES.ERROR, code: 8, message: 'User aborted the transfer' });
  assert.deepEqual(decodePacket(Buffer.from(FIRMWARE.ovmfTransfer, 'hex')), {
    opcode: OPCODES.RRQ, filename: 'boot.efi', mode: 'octet',
    options: [{ name: 'blksize', value: '1468' }, { name: 'windowsize', value: '4' }],
  });
  assert.deepEqual(decodePacket(Buffer.from(FIRMWARE.ipxeRequest, 'hex')), {
    opcode: OPCODES.RRQ, filename: 'boot.pxe', mode: 'octet',
    options: [{ name: 'blksize', value: '1432' }, { name: 'tsize', value: '0' }],
  });
  // And they re-encode to the same bytes.
  for (const hex of [FIRMWARE.ovmfProbe, FIRMWARE.ovmfTransfer, FIRMWARE.ipxeRequest]) {
    const p = decodePacket(Buffer.from(hex, 'hex'));
    assert.ok(p.opcode === OPCODES.RRQ);
    if (p.opcode === OPCODES.RRQ) assert.equal(encodeRequest(p.opcode, p.filename, p.mode, p.options).toString('hex'), hex);
  }
});
