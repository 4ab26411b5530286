'use strict';
// Runners for the vector kinds defined outside the foundation sections.
const path = require('path');
const cw = require('./caseway');
const b64 = require('./b64url');
const { CasewayError } = require('./errors');
const { loadDirectory } = require('./directory');
const { checkPolicy, applyTransition } = require('./messages');

function directoryRunner(v, { root }) {
  const inp = v.inputs;
  const schemaDir = path.resolve(root, '../../schemas');
  const bytes = cw.utf8(inp.directory);
  const im = v.intermediate || {};
  // Intermediate values the vector gives, checked independently.
  const outer = JSON.parse(inp.directory);
  if (im.protected_b64 && outer.protected !== im.protected_b64) return { pass: false, note: 'protected_b64 differs' };
  if (im.protected_text && Buffer.from(b64.decode(outer.protected)).toString('utf8') !== im.protected_text) {
    return { pass: false, note: 'protected_text differs from decoded protected' };
  }
  if (im.signing_input_hex && cw.toHex(cw.concat(cw.LABELS.directory, b64.decode(outer.protected))) !== im.signing_input_hex) {
    return { pass: false, note: 'signing input differs' };
  }
  if (inp.signer_seed) {
    const signer = cw.signingKeyFromSeed(inp.signer_seed);
    if (im.signer_public_key && b64.encode(signer.publicKey) !== im.signer_public_key) return { pass: false, note: 'signer public key differs' };
    if (im.signer_key_id && signer.keyId !== im.signer_key_id) return { pass: false, note: 'signer key id differs' };
  }
  const store = {
    pinned: inp.pinned_authority_keys.map((k) => b64.decode(k, 32)),
    heldSerial: inp.held_serial,
    heldBytes: undefined, // vectors model a store that remembers the serial, not the bytes
    now: inp.now,
    grace: inp.grace_seconds,
    schemaDir,
  };
  let res;
  try {
    res = loadDirectory(bytes, store);
  } catch (e) {
    if (!(e instanceof CasewayError)) throw e;
    if (v.expected.error === e.code) return { pass: true, note: `rejected: ${e.message}` };
    return { pass: false, note: `got error ${e.message}, expected ${v.expected.error || 'success'}` };
  }
  if (v.expected.error) return { pass: false, note: `accepted, expected error ${v.expected.error}` };
  const ids = res.doc.participants.map((p) => p.id);
  if (res.doc.serial !== v.expected.serial) return { pass: false, note: `serial ${res.doc.serial}` };
  if (JSON.stringify(ids) !== JSON.stringify(v.expected.participants)) return { pass: false, note: `participants ${ids}` };
  if (res.expiredWarning !== v.expected.expired_warning) return { pass: false, note: `expired_warning ${res.expiredWarning}` };
  return { pass: true, note: `loaded serial ${res.doc.serial}${res.expiredWarning ? ' (expired, within grace: warning)' : ''}` };
}


function deepEqual(a, b) {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
}

/** Compare one side's outcome with `expected` ({result,message,thread} or {error,section}). */
function judge(side, expected, fn) {
  let value;
  try {
    value = fn();
  } catch (e) {
    if (!(e instanceof CasewayError)) throw e;
    if (expected.error !== e.code) return `${side}: got ${e.message}, expected ${expected.error || 'success'}`;
    if (expected.section !== undefined && expected.section !== e.section) {
      return `${side}: section ${e.section}, expected ${expected.section}`;
    }
    return null;
  }
  if (expected.error) return `${side}: accepted, expected ${expected.error}`;
  if (expected.message !== undefined && !deepEqual(value.message, expected.message)) return `${side}: message differs`;
  if (expected.thread !== undefined && !deepEqual(value.thread, expected.thread)) {
    return `${side}: thread ${JSON.stringify(value.thread)} ≠ ${JSON.stringify(expected.thread)}`;
  }
  return null;
}

function messageRunner(v, { root }) {
  const inp = v.inputs;
  const schemaDir = path.resolve(root, '../../schemas');
  const sender = cw.signingKeyFromSeed(inp.sender_signing_seed);
  const enc = cw.encryptionKeyFromSecret(inp.recipient_encryption_secret);
  // 1. re-seal without the policy, compare bytes
  const sealed = cw.sealEnvelope({
    sender: inp.sender, senderKey: sender, recipient: inp.recipient, recipientPk: enc.publicKey,
    messageId: cw.hex(inp.message_id), esk: cw.hex(inp.ephemeral_secret),
    created: inp.created, expires: inp.expires, message: inp.message,
  });
  if (sealed.plaintextText !== v.intermediate.plaintext) return { pass: false, note: 're-sealed plaintext differs' };
  if (sealed.protectedText !== v.intermediate.protected) return { pass: false, note: 're-sealed protected header differs' };
  if (Buffer.from(sealed.envelope).toString('utf8') !== v.envelope) return { pass: false, note: 're-sealed envelope differs' };

  const policyCtx = (now) => ({
    recipient: inp.recipient,
    now,
    schemaDir,
    consentState: { threads: inp.consent_state.threads || {}, withdrawn: inp.consent_state.withdrawn || [] },
    sectorsOf: (p) => {
      if (!Object.prototype.hasOwnProperty.call(inp.directory, p)) throw new CasewayError('unknown_sender', p);
      return inp.directory[p];
    },
  });
  const lifecycle = (message) => (inp.thread ? applyTransition(inp.thread.prior, message, inp.thread.role) : undefined);

  // 2. sender: the policy judged at `created`, then the transition
  const senderSide = judge('seal', v.expected, () => {
    checkPolicy(inp.message, policyCtx(inp.created));
    return { message: inp.message, thread: lifecycle(inp.message) };
  });
  // 3. receiver: open (steps 1–13) at its `now`, then the transition
  const ctx = {
    me: inp.recipient,
    encryptionKeys: [enc],
    directory: [{ participant: inp.sender, publicKey: sender.publicKey, keyId: sender.keyId, validFrom: 0, validUntil: null, revokedAt: null }],
    seen: new Set(),
    now: inp.now,
    checkMessage: (inner) => checkPolicy(inner.message, policyCtx(inp.now)),
  };
  const receiverSide = judge('open', v.expected, () => {
    const opened = cw.openEnvelope(cw.utf8(v.envelope), ctx);
    return { message: opened.inner.message, thread: lifecycle(opened.inner.message) };
  });
  const problems = [senderSide, receiverSide].filter(Boolean);
  if (problems.length) return { pass: false, note: problems.join('; ') };
  const exp = v.expected.error ? `refused on seal and open: ${v.expected.error}${v.expected.section ? ' (' + v.expected.section + ')' : ''}` : `ok${v.expected.thread ? ' → ' + v.expected.thread.state : ''}`;
  return { pass: true, note: `re-sealed byte for byte; ${exp}` };
}

module.exports = { directory: directoryRunner, message: messageRunner };
