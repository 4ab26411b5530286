'use strict';
// Strict JSON per SPEC.md §2.1, written from the SPEC (not from the Python code).
// JSON.parse is not usable: it accepts duplicate keys, floats, big integers (rounding them)
// and lone surrogates. Objects are returned with a null prototype (so "__proto__" is an
// ordinary key) and keep the document's key order.
const { fail } = require('./errors');

const MAX_SAFE = 9007199254740991n; // 2^53 - 1
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Parse bytes as one strict JSON text.
 * @param {Uint8Array} bytes
 * @param {{maxBytes?: number, maxDepth?: number}} opts  size is checked before anything else
 */
function parseStrict(bytes, { maxBytes, maxDepth = 32 } = {}) {
  if (maxBytes !== undefined && bytes.length > maxBytes) {
    fail('too_large', `${bytes.length} > ${maxBytes} bytes`);
  }
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
    fail('malformed', 'byte-order mark');
  }
  let text;
  try {
    text = decoder.decode(bytes);
  } catch {
    fail('malformed', 'invalid UTF-8');
  }
  return new Parser(text, maxDepth).document();
}

class Parser {
  constructor(text, maxDepth) {
    this.s = text;
    this.i = 0;
    this.maxDepth = maxDepth;
    this.depth = 0;
  }
  bad(why) {
    fail('malformed', `${why} at offset ${this.i}`);
  }
  ws() {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.i++;
      else break;
    }
  }
  document() {
    this.ws();
    const v = this.value();
    this.ws();
    if (this.i !== this.s.length) this.bad('trailing data');
    return v;
  }
  value() {
    const c = this.s[this.i];
    if (c === '{') return this.object();
    if (c === '[') return this.array();
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    if (this.s.startsWith('true', this.i)) { this.i += 4; return true; }
    if (this.s.startsWith('false', this.i)) { this.i += 5; return false; }
    if (this.s.startsWith('null', this.i)) { this.i += 4; return null; }
    return this.bad('unexpected token'); // NaN, Infinity, comments, single quotes, EOF...
  }
  enter() {
    this.depth++;
    if (this.depth > this.maxDepth) this.bad(`nesting deeper than ${this.maxDepth}`);
  }
  object() {
    this.enter();
    this.i++; // {
    const obj = Object.create(null);
    const seen = new Set();
    this.ws();
    if (this.s[this.i] === '}') { this.i++; this.depth--; return obj; }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.bad('expected a string key');
      const key = this.string();
      if (seen.has(key)) this.bad(`duplicate key ${JSON.stringify(key)}`);
      seen.add(key);
      this.ws();
      if (this.s[this.i] !== ':') this.bad("expected ':'");
      this.i++;
      this.ws();
      obj[key] = this.value();
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') break;
      if (c !== ',') { this.i--; this.bad("expected ',' or '}'"); }
    }
    this.depth--;
    return obj;
  }
  array() {
    this.enter();
    this.i++; // [
    const arr = [];
    this.ws();
    if (this.s[this.i] === ']') { this.i++; this.depth--; return arr; }
    for (;;) {
      this.ws();
      arr.push(this.value());
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') break;
      if (c !== ',') { this.i--; this.bad("expected ',' or ']'"); }
    }
    this.depth--;
    return arr;
  }
  hex4() {
    const h = this.s.slice(this.i, this.i + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) this.bad('bad \\u escape');
    this.i += 4;
    return parseInt(h, 16);
  }
  string() {
    const s = this.s;
    this.i++; // opening quote
    let out = '';
    for (;;) {
      if (this.i >= s.length) this.bad('unterminated string');
      const c = s.charCodeAt(this.i);
      if (c === 0x22) { this.i++; return out; }
      if (c < 0x20) this.bad('raw control character in string');
      if (c !== 0x5c) {
        // Raw surrogates can only appear here as valid pairs (the UTF-8 decoder is fatal).
        out += s[this.i++];
        continue;
      }
      this.i++; // backslash
      const e = s[this.i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const u = this.hex4();
          if (u >= 0xdc00 && u <= 0xdfff) this.bad('lone low surrogate');
          if (u >= 0xd800 && u <= 0xdbff) {
            if (s[this.i] !== '\\' || s[this.i + 1] !== 'u') this.bad('lone high surrogate');
            this.i += 2;
            const lo = this.hex4();
            if (lo < 0xdc00 || lo > 0xdfff) this.bad('lone high surrogate');
            out += String.fromCharCode(u, lo);
          } else {
            out += String.fromCharCode(u);
          }
          break;
        }
        default:
          this.i--;
          this.bad('bad escape');
      }
    }
  }
  number() {
    const s = this.s;
    const start = this.i;
    if (s[this.i] === '-') this.i++;
    if (s[this.i] === '0') {
      this.i++;
    } else if (s[this.i] >= '1' && s[this.i] <= '9') {
      while (s[this.i] >= '0' && s[this.i] <= '9') this.i++;
    } else {
      this.bad('bad number');
    }
    const next = s[this.i];
    if (next === '.' || next === 'e' || next === 'E') this.bad('number with fraction or exponent');
    const lit = s.slice(start, this.i);
    const big = BigInt(lit);
    if (big > MAX_SAFE || big < -MAX_SAFE) this.bad('integer outside ±(2^53-1)');
    return Number(big);
  }
}

/** Compact serialisation (no insignificant white space), key order as in the object. */
function compact(value) {
  return JSON.stringify(value);
}

module.exports = { parseStrict, compact };
