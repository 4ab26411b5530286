'use strict';
// Trust directory verification and trust store, SPEC.md §11.6–§11.7.
const cw = require('./caseway');
const b64 = require('./b64url');
const { fail } = require('./errors');
const { parseStrict } = require('./strictjson');
const { validate } = require('./schemas');

const MAX_DIRECTORY = 4194304;
const SKEW = 300;
const hhmm = (s) => (s === '24:00' ? 1440 : Number(s.slice(0, 2)) * 60 + Number(s.slice(3)));

function timeZoneExists(z) {
  try {
    const resolved = new Intl.DateTimeFormat('en', { timeZone: z }).resolvedOptions().timeZone;
    // §11.4: exact, case-sensitive IANA Zone/Link names. Intl matches names
    // case-insensitively and knows ICU-only aliases (SystemV/…); the tz database does not.
    if (z.startsWith('SystemV/')) return false;
    return !(resolved.toLowerCase() === z.toLowerCase() && resolved !== z);
  } catch {
    return false;
  }
}

/** §11.6.1: follow successor statements on a copy of the pinned key set (Map keyId → pk). */
function followChain(keys, chain) {
  for (const st of chain) {
    // Form checks, in SPEC order (§11.6.1 steps 1–5), even for a statement that is skipped.
    if (!cw.isPlainObject(st) || !cw.keysExactly(st, ['protected', 'signature'])) fail('header_invalid', 'authority_chain statement');
    const pb = b64.decode(st.protected);
    const sig = b64.decode(st.signature, 64);
    const s = parseStrict(pb, { maxBytes: 1024, maxDepth: 1 });
    if (!cw.isPlainObject(s)) fail('header_invalid', 'successor statement not an object');
    if (s.v !== 1) fail('unsupported_version', 'successor statement');
    if (!cw.keysExactly(s, ['v', 'predecessor', 'successor', 'issued']) || !cw.isTime(s.issued)) {
      fail('header_invalid', 'successor statement fields');
    }
    b64.decode(s.predecessor, 16);
    const succ = b64.decode(s.successor, 32);
    const succId = cw.keyId(succ);
    if (keys.has(succId) || !keys.has(s.predecessor)) continue;
    cw.verifySig(cw.LABELS.authoritySuccessor, pb, sig, keys.get(s.predecessor));
    keys.set(succId, succ);
    keys.delete(s.predecessor);
  }
}

/** §11.6 step 7 rules beyond the schema. */
function checkRules(doc) {
  if (!(doc.expires > doc.issued)) fail('schema_invalid', '$.expires');
  const ids = new Set();
  doc.participants.forEach((p, i) => {
    const at = `$.participants[${i}]`;
    if (ids.has(p.id)) fail('schema_invalid', `${at}.id`);
    ids.add(p.id);
    if (!timeZoneExists(p.hours.timezone)) fail('schema_invalid', `${at}.hours.timezone`);
    const periods = p.hours.periods || [];
    periods.forEach((q, j) => {
      if (!(hhmm(q.closes) > hhmm(q.opens))) fail('schema_invalid', `${at}.hours.periods[${j}]`);
    });
    if (p.hours.always_open !== true && periods.length === 0) fail('schema_invalid', `${at}.hours`);
    const kids = new Set();
    p.keys.forEach((k, j) => {
      const kat = `${at}.keys[${j}]`;
      let pk;
      try { pk = b64.decode(k.key, 32); } catch { fail('schema_invalid', `${kat}.key`); }
      if (cw.keyId(pk) !== k.key_id) fail('schema_invalid', `${kat}.key_id`);
      if (kids.has(k.key_id)) fail('schema_invalid', `${kat}.key_id`);
      kids.add(k.key_id);
      if (k.valid_until !== null && !(k.valid_until > k.valid_from)) fail('schema_invalid', `${kat}.valid_until`);
    });
    if (p.endpoint !== undefined && p.endpoint !== null) {
      for (const use of ['signing', 'encryption']) {
        if (!p.keys.some((k) => k.use === use && k.status === 'active')) fail('schema_invalid', `${at}.keys`);
      }
    }
  });
}

/**
 * Verify signed directory bytes and apply the trust-store rules.
 * @param {{pinned: Uint8Array[], heldSerial: number, heldBytes?: Uint8Array, now: number, grace: number, schemaDir: string}} store
 */
function loadDirectory(bytes, store) {
  // 1–2
  if (bytes.length > MAX_DIRECTORY) fail('too_large', `directory ${bytes.length} bytes`);
  const { protectedBytes, signature } = cw.parseSignedOuter(bytes);
  // 3
  const doc = parseStrict(protectedBytes, { maxDepth: 32 });
  if (!cw.isPlainObject(doc)) fail('header_invalid', 'directory document not an object');
  if (doc.v !== 1) fail('unsupported_version', 'directory v');
  // §11.6 step 3: absent → header_invalid; not a canonical 16-byte key id (a non-string too) → bad_encoding
  if (!Object.prototype.hasOwnProperty.call(doc, 'authority')) fail('header_invalid', 'authority missing');
  b64.decode(doc.authority, 16);
  // 4
  const keys = new Map(store.pinned.map((pk) => [cw.keyId(pk), pk]));
  if (doc.authority_chain !== undefined) {
    if (!Array.isArray(doc.authority_chain) || doc.authority_chain.length > 16) fail('header_invalid', 'authority_chain');
    followChain(keys, doc.authority_chain);
  }
  // 5
  if (!keys.has(doc.authority)) fail('untrusted_authority', doc.authority);
  // 6
  cw.verifySig(cw.LABELS.directory, protectedBytes, signature, keys.get(doc.authority));
  // 7
  const err = validate(store.schemaDir, 'directory.schema.json', doc);
  if (err) fail('schema_invalid', err);
  checkRules(doc);
  // 8: serial, issue time, expiry
  if (doc.serial < store.heldSerial) fail('stale_directory', `${doc.serial} < ${store.heldSerial}`);
  if (doc.serial === store.heldSerial && store.heldBytes && !cw.eqBytes(store.heldBytes, protectedBytes)) {
    fail('stale_directory', 'same serial, different document');
  }
  if (doc.issued > store.now + SKEW) fail('not_yet_valid', 'directory issued in the future');
  let expiredWarning = false;
  if (store.now >= doc.expires) {
    if (store.now >= doc.expires + store.grace) fail('directory_expired');
    expiredWarning = true;
  }
  return { doc, expiredWarning, pins: [...keys.values()] };
}

module.exports = { loadDirectory, timeZoneExists };
