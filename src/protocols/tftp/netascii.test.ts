import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromNetascii, toNetascii } from './netascii.js';

test('LF becomes CR LF, bare CR becomes CR NUL', () => {
  assert.deepEqual(toNetascii(Buffer.from('a\nb\rc\r\n')), Buffer.from('a\r\nb\r\0c\r\0\r\n', 'latin1'));
  assert.deepEqual(toNetascii(Buffer.alloc(0)), Buffer.alloc(0));
});

test('round trip of arbitrary bytes', () => {
  let seed = 7;
  for (let n = 0; n < 200; n++) {
    const data = Buffer.alloc(n * 3);
    for (let i = 0; i < data.length; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      data[i] = [10, 13, 0, 65][seed % 4]!;
    }
    assert.deepEqual(fromNetascii(toNetascii(data)), data);
  }
});
