import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CLIENT_FLAGS,
  COMMAND_FLAGS,
  COMMANDS,
  ERRORS,
  HANDSHAKE_FLAGS,
  INFO_TYPES,
  MAGICS,
  OPTIONS,
  REPLY_FLAGS,
  REPLY_TYPES,
  STATE_FLAGS,
  STRUCTURED_REPLY_TYPES,
  TRANSMISSION_FLAGS,
  commandName,
  errorName,
  flagNames,
  nameOf,
  optionName,
  replyTypeName,
} from './constants.js';

test('values are the ones proto.md gives', () => {
  assert.equal(Buffer.from(MAGICS.NBDMAGIC.toString(16), 'hex').toString('latin1'), 'NBDMAGIC');
  assert.equal(Buffer.from(MAGICS.IHAVEOPT.toString(16), 'hex').toString('latin1'), 'IHAVEOPT');
  assert.equal(MAGICS.NBD_REP_MAGIC, 0x3e889045565a9n);
  assert.equal(MAGICS.NBD_REQUEST_MAGIC, 0x25609513);
  assert.equal(MAGICS.NBD_SIMPLE_REPLY_MAGIC, 0x67446698);
  assert.equal(MAGICS.NBD_STRUCTURED_REPLY_MAGIC, 0x668e33ef);
  assert.equal(REPLY_TYPES.NBD_REP_ERR_UNSUP, 2 ** 31 + 1);
  assert.equal(REPLY_TYPES.NBD_REP_ERR_TOO_BIG, 2 ** 31 + 9);
  assert.equal(STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_ERROR, 2 ** 15 + 1);
  assert.equal(STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_BLOCK_STATUS, 5);
  assert.equal(TRANSMISSION_FLAGS.NBD_FLAG_SEND_CACHE, 1 << 10);
  assert.equal(TRANSMISSION_FLAGS.NBD_FLAG_SEND_FAST_ZERO, 1 << 11);
  assert.equal(COMMAND_FLAGS.NBD_CMD_FLAG_FAST_ZERO, 1 << 4);
  assert.equal(COMMANDS.NBD_CMD_BLOCK_STATUS, 7);
  assert.equal(OPTIONS.NBD_OPT_SET_META_CONTEXT, 10);
  assert.deepEqual(Object.values(ERRORS), [1, 5, 12, 22, 28, 75, 95, 108]);
  assert.equal(INFO_TYPES.NBD_INFO_BLOCK_SIZE, 3);
  assert.equal(STATE_FLAGS.NBD_STATE_ZERO, 2);
});

test('values are unique within each group, and names carry the spec prefix', () => {
  const groups: [string, Record<string, number | bigint>, RegExp][] = [
    ['HANDSHAKE_FLAGS', HANDSHAKE_FLAGS, /^NBD_FLAG_/],
    ['CLIENT_FLAGS', CLIENT_FLAGS, /^NBD_FLAG_C_/],
    ['TRANSMISSION_FLAGS', TRANSMISSION_FLAGS, /^NBD_FLAG_/],
    ['OPTIONS', OPTIONS, /^NBD_OPT_/],
    ['REPLY_TYPES', REPLY_TYPES, /^NBD_REP_/],
    ['INFO_TYPES', INFO_TYPES, /^NBD_INFO_/],
    ['COMMANDS', COMMANDS, /^NBD_CMD_/],
    ['COMMAND_FLAGS', COMMAND_FLAGS, /^NBD_CMD_FLAG_/],
    ['REPLY_FLAGS', REPLY_FLAGS, /^NBD_REPLY_FLAG_/],
    ['STRUCTURED_REPLY_TYPES', STRUCTURED_REPLY_TYPES, /^NBD_REPLY_TYPE_/],
    ['ERRORS', ERRORS, /^NBD_E[A-Z]+$/],
    ['STATE_FLAGS', STATE_FLAGS, /^NBD_STATE_/],
  ];
  for (const [group, table, prefix] of groups) {
    const values = Object.values(table);
    assert.equal(new Set(values).size, values.length, `${group} has duplicate values`);
    for (const name of Object.keys(table)) assert.match(name, prefix, `${group}.${name}`);
  }
});

test('nameOf and flagNames turn wire values back into spec names', () => {
  assert.equal(optionName(7), 'NBD_OPT_GO');
  assert.equal(optionName(99), 'unknown(0x63)');
  assert.equal(replyTypeName(0x80000006), 'NBD_REP_ERR_UNKNOWN');
  assert.equal(commandName(4), 'NBD_CMD_TRIM');
  assert.equal(errorName(0), 'OK');
  assert.equal(errorName(28), 'NBD_ENOSPC');
  assert.equal(nameOf(MAGICS, 0x25609513), 'NBD_REQUEST_MAGIC');
  assert.deepEqual(flagNames(COMMAND_FLAGS, 0x11), ['NBD_CMD_FLAG_FUA', 'NBD_CMD_FLAG_FAST_ZERO']);
  assert.deepEqual(flagNames(COMMAND_FLAGS, 0x8001), ['NBD_CMD_FLAG_FUA', 'unknown(0x8000)']);
  assert.deepEqual(flagNames(TRANSMISSION_FLAGS, 0), []);
});
