#!/usr/bin/env node
'use strict';
// Independent Node.js check of examples/vectors against SPEC.md (issue 7, part 3):
// written from the SPEC, not from the Python reference implementation.
// Usage: node check.js [path/to/examples/vectors] [--verbose]
const fs = require('fs');
const path = require('path');
const cw = require('./lib/caseway');
const { CasewayError } = require('./lib/errors');

const args = process.argv.slice(2);
const verbose = args.includes('--verbose') || args.includes('-v');
const root = path.resolve(args.find((a) => !a.startsWith('-')) || path.join(__dirname, '../../vectors'));

// Vector files are test-harness data written by the generator, not protocol input, so
// JSON.parse is acceptable for them (they hold no duplicate keys or big integers).
const readJson = (p) => JSON.parse(fs.readFileSync(p, 'utf8'));

function deepEqual(a, b) {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
}

class Mismatch extends Error {}
function expectEq(what, got, want) {
  const g = got instanceof Uint8Array ? cw.toHex(got) : got;
  const w = want instanceof Uint8Array ? cw.toHex(want) : want;
  if (g !== w) throw new Mismatch(`${what}: got ${String(g).slice(0, 120)}, vector has ${String(w).slice(0, 120)}`);
}

/** Run `fn`; compare its outcome with `expected` ({error} or {result:"ok"}). */
function outcome(expected, fn) {
  let value;
  try {
    value = fn();
  } catch (e) {
    if (!(e instanceof CasewayError)) throw e;
    if (expected.error === e.code) return { pass: true, note: `rejected: ${e.message}` };
    return { pass: false, note: `got error ${e.message}, expected ${expected.error ? 'error ' + expected.error : 'success'}` };
  }
  if (expected.error) return { pass: false, note: `accepted, expected error ${expected.error}` };
  return { pass: true, value };
}

// ------------------------------------------------------------------ envelope vectors
function directoryFromKnownKeys(known) {
  return known.map((k) => {
    const pk = require('./lib/b64url').decode(k.signing_public_key, 32);
    const kid = cw.keyId(pk);
    if (kid !== k.key_id) throw new Mismatch(`known key ${k.participant}: key id ${kid} ≠ vector ${k.key_id}`);
    return { participant: k.participant, publicKey: pk, keyId: kid, validFrom: k.valid_from, validUntil: k.valid_until, revokedAt: k.revoked_at };
  });
}

function envelopeContext(inp, checkMessage) {
  const enc = cw.encryptionKeyFromSecret(inp.recipient.encryption_secret_hex);
  if (inp.recipient.encryption_key_id && enc.keyId !== inp.recipient.encryption_key_id) {
    throw new Mismatch(`recipient encryption key id ${enc.keyId} ≠ vector ${inp.recipient.encryption_key_id}`);
  }
  return {
    me: inp.recipient.participant,
    encryptionKeys: [enc],
    directory: directoryFromKnownKeys(inp.known_keys),
    seen: new Set((inp.seen || []).map(([s, id]) => `${s}\n${id}`)),
    now: inp.now,
    checkMessage,
  };
}

/** Re-seal from the inputs and compare every intermediate value and the envelope bytes. */
function resealAndCompare(v, p) {
  const r = cw.sealEnvelope(p);
  const im = v.intermediate;
  expectEq('plaintext', r.plaintextText, im.plaintext);
  expectEq('ephemeral public key', r.epk, cw.hex(im.ephemeral_public_key_hex));
  expectEq('nonce', r.nonce, cw.hex(im.nonce_hex));
  expectEq('ciphertext', require('./lib/b64url').encode(r.ciphertext), im.ciphertext_b64);
  expectEq('protected bytes', r.protectedText, im.protected);
  expectEq('signing input', r.signingInput, cw.hex(im.signing_input_hex));
  expectEq('signature', r.signature, cw.hex(im.signature_hex));
  expectEq('envelope bytes', Buffer.from(r.envelope).toString('utf8'), v.envelope);
  expectEq('envelope digest', r.digest, cw.hex(v.envelope_digest_hex));
}

function runEnvelope(v) {
  const inp = v.inputs;
  const op = inp.operation;
  if (inp.policy !== 'envelope-layer-only') throw new Mismatch(`unknown policy ${inp.policy}`);
  const sender = cw.signingKeyFromSeed(inp.sender.signing_seed_hex);
  expectEq('sender key id', sender.keyId, inp.sender.signing_key_id);
  const sealParams = () => ({
    sender: inp.sender.participant,
    senderKey: sender,
    recipient: inp.recipient.participant,
    recipientPk: inp.recipient_public_key_hex
      ? cw.hex(inp.recipient_public_key_hex)
      : cw.encryptionKeyFromSecret(inp.recipient.encryption_secret_hex).publicKey,
    messageId: cw.hex(inp.message_id_hex),
    esk: cw.hex(inp.ephemeral_secret_hex),
    created: inp.created,
    expires: inp.expires,
    message: inp.message,
  });
  if (op === 'seal') return outcome(v.expected, () => cw.sealEnvelope(sealParams()));
  const notes = [];
  if (op === 'seal-and-open') {
    resealAndCompare(v, sealParams());
    notes.push('re-sealed byte for byte');
  } else if (op !== 'open') {
    throw new Mismatch(`unknown operation ${op}`);
  }
  const bytes = cw.utf8(v.envelope);
  if (v.envelope_digest_hex) expectEq('envelope digest', cw.digest(bytes), cw.hex(v.envelope_digest_hex));
  // policy envelope-layer-only: steps 12–13 (message schema and rules) are not exercised.
  const res = outcome(v.expected, () => cw.openEnvelope(bytes, envelopeContext(inp)));
  if (res.pass && res.value) {
    if (!deepEqual(res.value.inner.message, v.expected.message)) return { pass: false, note: 'opened message differs from expected' };
    res.note = 'opened';
  }
  if (notes.length) res.note = `${notes.join(', ')}; ${res.note}`;
  return res;
}

// ------------------------------------------------------------------ receipt vectors
function runReceipt(v) {
  const inp = v.inputs;
  const signer = cw.signingKeyFromSeed(inp.signer.signing_seed_hex);
  expectEq('signer key id', signer.keyId, inp.signer.signing_key_id);
  const bytes = cw.utf8(v.receipt);
  let note = '';
  if (inp.operation === 'sign-and-verify') {
    const f = inp.fields;
    const r = cw.signReceipt({
      signer,
      participant: inp.signer.participant,
      messageId: f.message_id,
      envelopeDigest: cw.hex(f.envelope_digest_hex),
      sender: f.sender,
      receivedAt: f.received_at,
      error: f.error,
    });
    expectEq('protected bytes', r.protectedText, v.intermediate.protected);
    expectEq('signing input', r.signingInput, cw.hex(v.intermediate.signing_input_hex));
    expectEq('receipt bytes', Buffer.from(r.bytes).toString('utf8'), v.receipt);
    note = 're-signed byte for byte; ';
  } else if (inp.operation !== 'verify') {
    throw new Mismatch(`unknown operation ${inp.operation}`);
  }
  // The sender's view of the directory: the signer's key, valid without limits
  // (receipt vectors carry no known_keys; see README "SPEC notes").
  const directory = [{ participant: inp.signer.participant, publicKey: signer.publicKey, keyId: signer.keyId, validFrom: 0, validUntil: null, revokedAt: null }];
  const res = outcome(v.expected, () =>
    cw.verifyReceipt(bytes, { expectedRecipient: inp.expected_recipient, expectedDigest: cw.hex(inp.expected_envelope_digest_hex), directory }));
  if (res.pass && res.value) {
    const r = res.value;
    if (r.outcome !== v.expected.outcome) return { pass: false, note: `outcome ${r.outcome} ≠ ${v.expected.outcome}` };
    const wantErr = v.expected.receipt_error === undefined ? null : v.expected.receipt_error;
    if (r.error !== wantErr) return { pass: false, note: `receipt error ${r.error} ≠ ${wantErr}` };
    res.note = `verified (${r.outcome}${r.error ? ' ' + r.error : ''})`;
  }
  res.note = note + res.note;
  return res;
}

// ------------------------------------------------------------------ main
const RUNNERS = { envelope: runEnvelope, receipt: runReceipt, ...require('./lib/kinds') };

/** Vector files on disk that index.json does not list (vectors must be self-describing). */
function unlisted(index) {
  const listed = new Set(index.vectors.map((e) => e.file));
  const out = [];
  for (const d of fs.readdirSync(root, { withFileTypes: true })) {
    if (!d.isDirectory()) continue;
    for (const f of fs.readdirSync(path.join(root, d.name))) {
      if (f.endsWith('.json') && !listed.has(`${d.name}/${f}`)) out.push(`${d.name}/${f}`);
    }
  }
  return out;
}

async function main() {
  await cw.ready;
  const index = readJson(path.join(root, 'index.json'));
  let passed = 0;
  let failed = 0;
  const byKind = {};
  for (const entry of index.vectors) {
    const name = entry.file;
    let res;
    try {
      const v = readJson(path.join(root, entry.file));
      if (v.kind !== entry.kind) throw new Mismatch(`kind ${v.kind} ≠ index ${entry.kind}`);
      if (!deepEqual(v.expected, entry.expected)) throw new Mismatch('expected result differs from index.json');
      const run = RUNNERS[entry.kind];
      if (!run) throw new Mismatch(`kind '${entry.kind}' not implemented by this checker`);
      res = run(v, { root });
    } catch (e) {
      if (!(e instanceof Mismatch)) console.error(e);
      res = { pass: false, note: e.message };
    }
    const k = (byKind[entry.kind] ||= { passed: 0, failed: 0 });
    if (res.pass) { passed++; k.passed++; } else { failed++; k.failed++; }
    if (!res.pass || verbose) console.log(`${res.pass ? 'ok  ' : 'FAIL'} ${name}${res.note ? ' — ' + res.note : ''}`);
  }
  for (const f of unlisted(index)) {
    failed++;
    console.log(`FAIL ${f} — not listed in index.json`);
  }
  for (const [kind, k] of Object.entries(byKind)) console.log(`  ${kind}: ${k.passed} passed, ${k.failed} failed`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
}

main().catch((e) => {
  console.error(e);
  console.log('0 passed, 1 failed');
  process.exitCode = 1;
});
