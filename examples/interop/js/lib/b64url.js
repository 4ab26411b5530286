'use strict';
// Canonical unpadded base64url, SPEC.md §2.2.
const { fail } = require('./errors');

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const VALUE = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) VALUE[ALPHABET.charCodeAt(i)] = i;

/**
 * Decode; any deviation from the one canonical form is `bad_encoding`.
 * @param {string} s
 * @param {number|{min:number}} [length] fixed decoded length, or a minimum
 */
function decode(s, length) {
  if (typeof s !== 'string') fail('bad_encoding', 'not a string');
  if (s.length % 4 === 1) fail('bad_encoding', 'length ≡ 1 (mod 4)');
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? VALUE[c] : -1;
    if (v < 0) fail('bad_encoding', `character ${JSON.stringify(s[i])} not in the base64url alphabet`);
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
    acc &= (1 << bits) - 1;
  }
  if (acc !== 0) fail('bad_encoding', 'non-canonical final character (unused bits not zero)');
  if (typeof length === 'number' && out.length !== length) {
    fail('bad_encoding', `decoded length ${out.length}, expected ${length}`);
  }
  if (length && typeof length === 'object' && out.length < length.min) {
    fail('bad_encoding', `decoded length ${out.length} < ${length.min}`);
  }
  return out;
}

function encode(bytes) {
  return Buffer.from(bytes).toString('base64url'); // Node writes no padding
}

module.exports = { decode, encode };
