'use strict';
// Caseway v1 envelope and receipt processing, implemented from SPEC.md §2–§6 only.
const sodium = require('libsodium-wrappers');
const { fail, CasewayError } = require('./errors');
const { parseStrict, compact } = require('./strictjson');
const b64 = require('./b64url');

const ready = sodium.ready;

const label = (s) => new Uint8Array([...Buffer.from(s, 'ascii'), 0]);
const LABELS = {
  envelope: label('caseway/v1 envelope'),
  receipt: label('caseway/v1 receipt'),
  directory: label('caseway/v1 directory'),
  authoritySuccessor: label('caseway/v1 authority-successor'),
};

const LIMITS = {
  envelope: 1048576,
  plaintext: 524288,
  receipt: 4096,
  skew: 300,
  lifetime: 2592000,
};

const PARTICIPANT_RE = /^[a-z0-9][a-z0-9.-]{0,63}$/;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};
const utf8 = (s) => new Uint8Array(Buffer.from(s, 'utf8'));
const hex = (h) => new Uint8Array(Buffer.from(h, 'hex'));
const toHex = (b) => Buffer.from(b).toString('hex');
const eqBytes = (a, b) => a.length === b.length && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

// §2.4 / §3
const digest = (x) => sodium.crypto_generichash(32, x, null);
const keyId = (pk) => b64.encode(sodium.crypto_generichash(16, pk, null));

const isTime = (x) => Number.isInteger(x) && x >= 0 && x <= MAX_SAFE;
const isParticipant = (x) => typeof x === 'string' && PARTICIPANT_RE.test(x);
const keysExactly = (obj, names) => {
  const ks = Object.keys(obj);
  return ks.length === names.length && names.every((n) => Object.prototype.hasOwnProperty.call(obj, n));
};
const isPlainObject = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);

/** X25519 that reports an all-zero result (low-order input) as `weak_key`. */
function x25519(secret, pub) {
  try {
    const shared = sodium.crypto_scalarmult(secret, pub);
    if (shared.every((b) => b === 0)) fail('weak_key', 'all-zero X25519 output');
    return shared;
  } catch (e) {
    if (e instanceof CasewayError) throw e;
    // libsodium's crypto_scalarmult returns -1 exactly when the output is all zero.
    fail('weak_key', 'low-order X25519 point');
  }
}

// ---------------------------------------------------------------- signing keys
function signingKeyFromSeed(seedHex) {
  const kp = sodium.crypto_sign_seed_keypair(hex(seedHex));
  return { seed: hex(seedHex), publicKey: kp.publicKey, secretKey: kp.privateKey, keyId: keyId(kp.publicKey) };
}
function encryptionKeyFromSecret(secretHex) {
  const sk = hex(secretHex);
  const pk = sodium.crypto_scalarmult_base(sk);
  return { secretKey: sk, publicKey: pk, keyId: keyId(pk) };
}

/**
 * §3 key validity, in the order of §3 (revocation before the validity window, as §11.5
 * restates). `directory` is a list of
 * {participant, publicKey (bytes), keyId, validFrom, validUntil|null, revokedAt|null}.
 */
function resolveSigningKey(directory, participant, kid, at) {
  const entries = directory.filter((k) => k.participant === participant);
  if (entries.length === 0) fail('unknown_sender', participant);
  const key = entries.find((k) => k.keyId === kid);
  if (!key) fail('unknown_key', `${participant}/${kid}`);
  if (key.revokedAt !== null && at >= key.revokedAt) fail('revoked_key', `${participant}/${kid}`);
  if (at < key.validFrom || (key.validUntil !== null && at >= key.validUntil)) {
    fail('unknown_key', `${participant}/${kid} not valid at ${at}`);
  }
  return key.publicKey;
}

// ---------------------------------------------------------------- §5.3 sealed box
function sealDeterministic(plaintext, recipientPk, esk) {
  const epk = sodium.crypto_scalarmult_base(esk);
  x25519(esk, recipientPk); // weak_key if the recipient "key" has low order
  const nonce = sodium.crypto_generichash(24, concat(epk, recipientPk), null);
  const box = sodium.crypto_box_easy(plaintext, nonce, recipientPk, esk);
  return { epk, nonce, ciphertext: concat(epk, box) };
}

// ---------------------------------------------------------------- §4 signed documents
/** Outer form: strict parse (depth 2), exactly {protected, signature}, canonical base64url. */
function parseSignedOuter(bytes) {
  const outer = parseStrict(bytes, { maxDepth: 2 });
  if (!isPlainObject(outer) || !keysExactly(outer, ['protected', 'signature'])) {
    fail('header_invalid', 'outer object must be exactly {protected, signature}');
  }
  const protectedBytes = b64.decode(outer.protected);
  const signature = b64.decode(outer.signature, 64);
  return { protectedBytes, signature };
}

function verifySig(lbl, protectedBytes, signature, publicKey) {
  const ok = sodium.crypto_sign_verify_detached(signature, concat(lbl, protectedBytes), publicKey);
  if (!ok) fail('bad_signature');
}

function signDocument(lbl, protectedBytes, secretKey) {
  const signature = sodium.crypto_sign_detached(concat(lbl, protectedBytes), secretKey);
  const outer = compact({ protected: b64.encode(protectedBytes), signature: b64.encode(signature) });
  return { signature, bytes: utf8(outer) };
}

// ---------------------------------------------------------------- §5.4 sealing
/**
 * Deterministic sealing from fixed inputs (vectors): returns every intermediate value.
 * @param {object} p {sender, senderKey, recipient, recipientPk, messageId (16 bytes), esk, created, expires, message}
 */
function sealEnvelope(p) {
  const id = b64.encode(p.messageId);
  const plaintextText = compact({ v: 1, id, sender: p.sender, recipient: p.recipient, message: p.message });
  const plaintext = utf8(plaintextText);
  if (plaintext.length > LIMITS.plaintext) fail('too_large', 'plaintext');
  const { epk, nonce, ciphertext } = sealDeterministic(plaintext, p.recipientPk, p.esk);
  const header = {
    v: 1,
    id,
    created: p.created,
    expires: p.expires,
    sender: p.sender,
    sender_key: p.senderKey.keyId,
    recipient: p.recipient,
    recipient_key: keyId(p.recipientPk),
    ciphertext: b64.encode(ciphertext),
  };
  const protectedText = compact(header);
  const protectedBytes = utf8(protectedText);
  const signingInput = concat(LABELS.envelope, protectedBytes);
  const { signature, bytes } = signDocument(LABELS.envelope, protectedBytes, p.senderKey.secretKey);
  if (bytes.length > LIMITS.envelope) fail('too_large', 'envelope');
  return { plaintextText, epk, nonce, ciphertext, protectedText, signingInput, signature, envelope: bytes, digest: digest(bytes) };
}

// ---------------------------------------------------------------- §5.5 opening
/**
 * Open an envelope exactly in the order of SPEC §5.5 steps 1–11. Steps 12–13 (message
 * schema and rules) are done by the caller with `checkMessage`, which gets the plaintext.
 * @param {Uint8Array} bytes
 * @param {{me:string, encryptionKeys:Array, directory:Array, seen:Set<string>, now:number,
 *          checkMessage?:(inner:object, header:object)=>void}} ctx
 */
function openEnvelope(bytes, ctx) {
  // 1. size, before parsing
  if (bytes.length > LIMITS.envelope) fail('too_large', `envelope ${bytes.length} bytes`);
  // 2. outer
  const { protectedBytes, signature } = parseSignedOuter(bytes);
  // 3. protected bytes: strict JSON, depth 1; v must be the integer 1
  const h = parseStrict(protectedBytes, { maxDepth: 1 });
  if (!isPlainObject(h)) fail('header_invalid', 'protected header is not an object');
  if (h.v !== 1) fail('unsupported_version', `v = ${h.v}`);
  // 4. header schema
  const FIELDS = ['v', 'id', 'created', 'expires', 'sender', 'sender_key', 'recipient', 'recipient_key', 'ciphertext'];
  if (!keysExactly(h, FIELDS)) fail('header_invalid', `fields ${Object.keys(h).join(',')}`);
  if (!isTime(h.created) || !isTime(h.expires)) fail('header_invalid', 'created/expires not times');
  if (!isParticipant(h.sender) || !isParticipant(h.recipient)) fail('header_invalid', 'participant id');
  b64.decode(h.id, 16); // a non-string is bad_encoding too (§2.2)
  b64.decode(h.sender_key, 16);
  b64.decode(h.recipient_key, 16);
  const ciphertext = b64.decode(h.ciphertext, { min: 48 });
  if (!(h.created < h.expires && h.expires <= h.created + LIMITS.lifetime)) {
    fail('header_invalid', 'created < expires <= created + 2592000 violated');
  }
  // 5. sender key valid at `created`
  const senderPk = resolveSigningKey(ctx.directory, h.sender, h.sender_key, h.created);
  // 6. signature over LABEL || protected bytes as received
  verifySig(LABELS.envelope, protectedBytes, signature, senderPk);
  // 7. addressed to me
  const encKey = ctx.encryptionKeys.find((k) => k.keyId === h.recipient_key);
  if (h.recipient !== ctx.me || !encKey) fail('not_for_me', `${h.recipient}/${h.recipient_key}`);
  // 8. time window
  if (ctx.now >= h.expires) fail('expired');
  if (h.created > ctx.now + LIMITS.skew) fail('not_yet_valid');
  // 9. replay
  if (ctx.seen.has(`${h.sender}\n${h.id}`)) fail('replayed');
  // 10. decrypt
  x25519(encKey.secretKey, ciphertext.subarray(0, 32));
  let plaintext;
  try {
    plaintext = sodium.crypto_box_seal_open(ciphertext, encKey.publicKey, encKey.secretKey);
  } catch {
    fail('decrypt_failed');
  }
  // 11. binding
  const inner = parseStrict(plaintext, { maxBytes: LIMITS.plaintext, maxDepth: 32 });
  if (!isPlainObject(inner) || !keysExactly(inner, ['v', 'id', 'sender', 'recipient', 'message']) || !isPlainObject(inner.message)) {
    fail('schema_invalid', 'plaintext fields');
  }
  if (inner.v !== 1) fail('unsupported_version', 'inner v');
  if (inner.id !== h.id || inner.sender !== h.sender || inner.recipient !== h.recipient) {
    fail('binding_mismatch');
  }
  // 12–13. message schema and rules
  if (ctx.checkMessage) ctx.checkMessage(inner, h);
  return { header: h, inner, plaintext, digest: digest(bytes) };
}

// ---------------------------------------------------------------- §6 receipts
const RECEIPT_FIELDS = ['v', 'message_id', 'envelope_digest', 'sender', 'recipient', 'recipient_key', 'received_at', 'outcome', 'error'];

function signReceipt({ signer, participant, messageId, envelopeDigest, sender, receivedAt, error }) {
  const fields = {
    v: 1,
    message_id: messageId,
    envelope_digest: b64.encode(envelopeDigest),
    sender,
    recipient: participant,
    recipient_key: signer.keyId,
    received_at: receivedAt,
    outcome: error === null ? 'accepted' : 'rejected',
    error,
  };
  const protectedText = compact(fields);
  const protectedBytes = utf8(protectedText);
  const { signature, bytes } = signDocument(LABELS.receipt, protectedBytes, signer.secretKey);
  return { protectedText, signingInput: concat(LABELS.receipt, protectedBytes), signature, bytes };
}

/**
 * §6.4 verification by the sender.
 * @param {{expectedRecipient:string, expectedDigest:Uint8Array, directory:Array}} ctx
 */
function verifyReceipt(bytes, ctx) {
  // 1. size, strict parse, outer form, fields
  if (bytes.length > LIMITS.receipt) fail('too_large', `receipt ${bytes.length} bytes`);
  const { protectedBytes, signature } = parseSignedOuter(bytes);
  const r = parseStrict(protectedBytes, { maxDepth: 1 });
  if (!isPlainObject(r)) fail('header_invalid', 'receipt protected part is not an object');
  if (r.v !== 1) fail('unsupported_version', 'receipt v');
  if (!keysExactly(r, RECEIPT_FIELDS)) fail('header_invalid', 'receipt fields');
  if (!(r.sender === null || isParticipant(r.sender)) || !isParticipant(r.recipient)) fail('header_invalid', 'participant id');
  if (!isTime(r.received_at)) fail('header_invalid', 'received_at');
  // §6.1 + §8: any well-formed code is accepted (codes may be added within v1).
  if (r.outcome === 'accepted' ? r.error !== null : !(r.outcome === 'rejected' && typeof r.error === 'string' && /^[a-z_]{1,64}$/.test(r.error))) {
    fail('header_invalid', 'outcome/error');
  }
  if (r.message_id !== null) b64.decode(r.message_id, 16); // non-strings are bad_encoding (§2.2)
  const envDigest = b64.decode(r.envelope_digest, 32);
  b64.decode(r.recipient_key, 16);
  // 2. for the envelope we sent, to whom we sent it
  if (r.recipient !== ctx.expectedRecipient) fail('not_for_me', `receipt from ${r.recipient}`);
  if (!eqBytes(envDigest, ctx.expectedDigest)) fail('not_for_me', 'envelope digest differs');
  // 3. signer key valid at received_at
  const pk = resolveSigningKey(ctx.directory, r.recipient, r.recipient_key, r.received_at);
  // 4. signature
  verifySig(LABELS.receipt, protectedBytes, signature, pk);
  return r;
}

module.exports = {
  ready, sodium, LABELS, LIMITS, digest, keyId, hex, toHex, utf8, concat, eqBytes,
  signingKeyFromSeed, encryptionKeyFromSecret, resolveSigningKey, sealDeterministic, sealEnvelope,
  openEnvelope, signReceipt, verifyReceipt, parseSignedOuter, verifySig, isPlainObject, keysExactly,
  isParticipant, isTime,
};
