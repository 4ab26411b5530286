'use strict';
// Message policy (schema, consent, firewall) and the thread lifecycle, SPEC.md §12.
const cw = require('./caseway');
const b64 = require('./b64url');
const { CasewayError } = require('./errors');
const { validate } = require('./schemas');

function failS(code, section, detail) {
  const e = new CasewayError(code, detail || section);
  e.section = section;
  throw e;
}

const DATA_TYPES = new Set(['referral', 'onward_referral', 'info_response']);
const FEEDBACK_TYPES = new Set(['update', 'close']);
const TYPES = new Set(['referral', 'onward_referral', 'accept', 'decline', 'info_request', 'info_response',
  'update', 'close', 'cancel', 'consent_withdrawal', 'erasure_confirmation']);

// ---------------------------------------------------------------- schema (§12.7 (1))
function checkSchema(message, schemaDir) {
  const type = message.type;
  if (typeof type !== 'string' || !TYPES.has(type)) failS('schema_invalid', undefined, 'unknown message type');
  const err = validate(schemaDir, `${type.replace(/_/g, '-')}.schema.json`, message);
  if (err) failS('schema_invalid', undefined, err);
  // §12.3: an inline attachment's size and digest equal the declared ones.
  for (const a of message.attachments || []) {
    if (a.inline === undefined) continue;
    const bytes = b64.decode(a.inline); // bad_encoding if not canonical
    if (bytes.length > 49152 || bytes.length !== a.size || b64.encode(cw.digest(bytes)) !== a.digest) {
      failS('schema_invalid', 'attachments', 'inline content differs from size/digest');
    }
  }
  // §12.10 step 4: the tombstone's ids equal the message's own.
  if (type === 'erasure_confirmation') {
    const t = message.tombstone;
    if (t.case_id !== message.case_id || t.thread_id !== message.thread_id || t.consent_id !== message.consent_id) {
      failS('schema_invalid', 'tombstone', 'tombstone ids differ from the message');
    }
  }
  // §12.5 / §12.7 (1): a consent record expires after it was given.
  if (message.consent !== undefined && !(message.consent.expires_at > message.consent.given_at)) {
    failS('schema_invalid', 'consent', 'consent expires_at must be after given_at');
  }
}

// ---------------------------------------------------------------- firewall (§12.6)
function checkFirewall(sectors, purposes) {
  if (sectors.some((s) => s === 'immigration_enforcement' || s === 'recruitment_agency')) {
    failS('firewall', undefined, 'recipient sector never receives case data');
  }
  if (sectors.some((s) => s === 'police' || s === 'justice_courts') && !purposes.includes('reporting')) {
    failS('firewall', undefined, 'police/justice only for reporting');
  }
}

// ---------------------------------------------------------------- consent (§12.5)
function checkConsentValid(consent, state, now) {
  if (state.withdrawn.includes(consent.consent_id)) failS('consent_withdrawn', 'consent'); // C2
  if (!(now < consent.expires_at)) failS('consent_expired', 'consent'); // C3
}

/**
 * @param ctx {{recipient, now, sectorsOf:(p)=>string[], consentState:{threads, withdrawn}}}
 */
function checkPolicy(message, ctx) {
  checkSchema(message, ctx.schemaDir);
  const type = message.type;
  if (DATA_TYPES.has(type)) {
    let consent;
    let purposes;
    if (type === 'info_response') {
      consent = ctx.consentState.threads[message.thread_id];
      if (!consent) failS('consent_violation', 'consent', 'no consent recorded for the thread');
      purposes = consent.scope.purposes;
    } else {
      consent = message.consent;
      purposes = message.purposes;
      // §12.5/§12.7: part of determining the consent in play, so before C1.
      const prev = type === 'onward_referral' ? ctx.consentState.threads[message.previous_thread] : undefined;
      if (prev && prev.consent_id !== consent.consent_id) failS('consent_violation', 'consent', 'onward referral under another consent');
    }
    const sectors = ctx.sectorsOf(ctx.recipient);
    checkFirewall(sectors, purposes); // C1
    checkConsentValid(consent, ctx.consentState, ctx.now); // C2, C3
    if (!(consent.given_at <= message.sent_at)) failS('consent_violation', 'consent'); // C4
    const r = consent.scope.recipients; // C5
    if (!((r.participants || []).includes(ctx.recipient) || sectors.some((s) => (r.sectors || []).includes(s)))) {
      failS('consent_violation', 'recipient');
    }
    for (const p of purposes) if (!consent.scope.purposes.includes(p)) failS('consent_violation', 'purposes'); // C6
    const cats = consent.scope.data_categories; // C7
    for (const section of Object.keys(message.sections || {})) {
      if (!cats.includes(section)) failS('consent_violation', section);
    }
    for (const a of message.attachments || []) if (!cats.includes(a.category)) failS('consent_violation', 'attachments');
    const needs = message.sections && message.sections.needs; // C8
    if (needs && (needs.services_requested || []).some((s) => (consent.services_refused || []).includes(s))) {
      failS('consent_violation', 'needs');
    }
    if (type === 'onward_referral' && !consent.scope.onward_referral_allowed) failS('consent_violation', 'onward_referral'); // C9
  } else if (FEEDBACK_TYPES.has(type)) {
    const consent = ctx.consentState.threads[message.thread_id];
    if (!consent) failS('consent_violation', 'consent', 'no consent recorded for the thread');
    checkConsentValid(consent, ctx.consentState, ctx.now);
    if (!consent.scope.feedback_allowed) { // F1
      if (type === 'update') failS('consent_violation', 'feedback');
      if (message.outcome !== 'outcome_not_shared' || message.services_delivered !== undefined || message.note !== undefined) {
        failS('consent_violation', 'feedback');
      }
    }
  }
  // control messages: schema only
}

// ---------------------------------------------------------------- lifecycle (§12.8–§12.9)
const TABLE = {};
[
  ['new', 'referrer', 'referral', 'sent'], ['new', 'referrer', 'onward_referral', 'sent'],
  ['sent', 'receiver', 'accept', 'accepted'], ['sent', 'receiver', 'decline', 'declined'],
  ['sent', 'receiver', 'info_request', 'info_requested'], ['sent', 'referrer', 'cancel', 'cancelled'],
  ['sent', 'referrer', 'consent_withdrawal', 'withdrawn'],
  ['info_requested', 'referrer', 'info_response', 'sent'], ['info_requested', 'receiver', 'accept', 'accepted'],
  ['info_requested', 'receiver', 'decline', 'declined'], ['info_requested', 'referrer', 'cancel', 'cancelled'],
  ['info_requested', 'referrer', 'consent_withdrawal', 'withdrawn'],
  ['accepted', 'receiver', 'update', 'in_progress'], ['accepted', 'receiver', 'info_request', 'accepted'],
  ['accepted', 'referrer', 'info_response', 'accepted'], ['accepted', 'receiver', 'close', 'closed'],
  ['accepted', 'referrer', 'cancel', 'cancelled'], ['accepted', 'referrer', 'consent_withdrawal', 'withdrawn'],
  ['in_progress', 'receiver', 'update', 'in_progress'], ['in_progress', 'receiver', 'info_request', 'in_progress'],
  ['in_progress', 'referrer', 'info_response', 'in_progress'], ['in_progress', 'receiver', 'close', 'closed'],
  ['in_progress', 'referrer', 'cancel', 'cancelled'], ['in_progress', 'referrer', 'consent_withdrawal', 'withdrawn'],
  ['declined', 'referrer', 'consent_withdrawal', 'withdrawn'], ['closed', 'referrer', 'consent_withdrawal', 'withdrawn'],
  ['cancelled', 'referrer', 'consent_withdrawal', 'withdrawn'], ['expired', 'referrer', 'consent_withdrawal', 'withdrawn'],
  ['withdrawn', 'receiver', 'erasure_confirmation', 'erased'],
].forEach(([s, r, t, n]) => { TABLE[`${s}|${r}|${t}`] = n; });

/** Apply one message (sent by `role`) to a thread state (ThreadState JSON); returns the next state. */
function applyTransition(prior, message, role) {
  const bad = (why) => failS('invalid_transition', undefined, why);
  if (prior.state !== 'new' && (message.thread_id !== prior.thread_id || message.case_id !== prior.case_id)) {
    bad('message for another thread or case');
  }
  const expected = prior.next_seq[role];
  if (message.seq < expected) bad(`${role} seq ${message.seq} already used`);
  // SPEC §12.8: a withdrawal and its erasure confirmation may skip numbers taken by
  // messages the withdrawal cancelled.
  const maySkip = message.type === 'consent_withdrawal' || message.type === 'erasure_confirmation';
  if (message.seq > expected && !maySkip) failS('sequence_gap', undefined, `${role} seq ${message.seq}, expected ${expected}`);
  // §12.9: judged by the message's own sent_at
  let state = prior.state;
  if (state === 'expired' && prior.expired_from && message.sent_at < prior.respond_by) state = prior.expired_from;
  if ((state === 'sent' || state === 'info_requested') && message.sent_at >= prior.respond_by) state = 'expired';
  const next = TABLE[`${state}|${role}|${message.type}`];
  if (!next) bad(`${role} may not send ${message.type} in state ${state}`);
  if ((message.type === 'consent_withdrawal' || message.type === 'erasure_confirmation') && message.consent_id !== prior.consent_id) {
    bad('names another consent than the thread\'s');
  }
  const out = {
    state: next,
    case_id: prior.case_id,
    thread_id: prior.thread_id,
    consent_id: prior.consent_id,
    respond_by: prior.respond_by,
    next_seq: { ...prior.next_seq, [role]: message.seq + 1 },
    expired_from: null,
  };
  if (prior.state === 'new') {
    out.case_id = message.case_id;
    out.thread_id = message.thread_id;
    out.consent_id = message.consent.consent_id;
    out.respond_by = message.respond_by;
  }
  return out;
}

module.exports = { checkPolicy, checkSchema, applyTransition };
