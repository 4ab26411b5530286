"""Write the hostile-input corpus (issue 6, item 3) deterministically.

    .venv/bin/python tests/corpus/generate.py          # rewrite tests/corpus/cases/
    .venv/bin/python tests/corpus/generate.py --check  # fail if the files differ

Every case is one file under ``cases/`` (the exact request body, or for ``raw`` cases the
exact bytes written to the socket) and one entry in ``manifest.json``: what it is, how to
send it, and the answer the node must give: HTTP status and error code, which are the
documented ones (SPEC.md §7 and "Federation endpoint"). ``tests/test_hostile_corpus.py``
replays them against a real node.

The world the cases are written for (the test builds the same one): the receiver
``ph-shelter-manila`` runs the real ReferralPolicy and CaseLifecycle with its clock at
``NOW`` and knows three senders, ``ph-embassy-kl``, ``ph-legal-cebu`` (its signing key was
revoked an hour before ``NOW``) and ``ph-clinic-davao``. Keys are derived from fixed seeds
(``reliability_helpers.fixed_identity``), message ids and sealed-box ephemeral secrets from
the case name, so a rerun writes the same bytes. Envelopes carrying schema-invalid or
consent-violating messages are sealed with ``EnvelopeLayerOnly`` (a sender skipping its own
checks), so only the receiver's policy stands between them and the database.

Expansion markers keep the repository small: ``@@REPEAT:<hex>:<count>@@`` in a file stands
for ``bytes.fromhex(hex) * count`` (oversized bodies, deep nesting, huge strings).
Fields of an entry:

- ``kind``: ``post`` (a POST of the body to the federation endpoint), ``raw`` (bytes on a
  socket: slow-loris and broken HTTP), ``setup`` (a valid envelope delivered before the
  corpus runs; must be accepted), ``local_api`` (a request to the local API);
- ``content_type``, ``chunked`` (send the body with chunked transfer encoding);
- ``status`` and ``code``: the expected HTTP status and error code (``duplicate``: the
  original receipt again; ``null``: an HTTP-level answer without a receipt, from aiohttp
  before any Caseway handler runs);
- ``receipt_digest``: ``body`` (the receipt names the digest of the bytes sent) or
  ``empty`` (refused before the body was read);
- ``stall``: for ``raw`` cases, the client sends the bytes and then neither sends nor
  closes; the node must answer or close within its body deadline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from caseway.protocol import crypto  # noqa: E402
from caseway.protocol.encoding import b64decode, b64encode, dump_json  # noqa: E402
from caseway.protocol.envelope import (  # noqa: E402
    MAX_ENVELOPE_BYTES,
    EnvelopeLayerOnly,
    seal_envelope,
)
from caseway.protocol.errors import ErrorCode  # noqa: E402

from reliability_helpers import (  # noqa: E402
    EMBASSY,
    NOW,
    SHELTER,
    fixed_identity,
    referral,
    thread_id,
)

CASES = HERE / "cases"
MANIFEST = HERE / "manifest.json"
LEGAL, CLINIC, STRANGER = "ph-legal-cebu", "ph-clinic-davao", "xx-unknown-agency"
REVOKED_AT = NOW - 3600
JSON = "application/json"
PATH = "/caseway/v1/envelopes"

EMB = fixed_identity(EMBASSY)
SHE = fixed_identity(SHELTER)
LEG = fixed_identity(LEGAL)
CLI = fixed_identity(CLINIC)
STR = fixed_identity(STRANGER)
ROGUE = fixed_identity(EMBASSY, "rogue")  # a signing key the directory does not list
OLD_SHELTER = fixed_identity(SHELTER, "old")  # an encryption key the shelter never held


def rnd(*parts: object, n: int = 32) -> bytes:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=n).digest()


# ----------------------------------------------------------------------------- builders


def seal(message: dict[str, Any], name: str, *, sender: Any = EMB, recipient: str = SHELTER,
         recipient_public: bytes | None = None, created: int = NOW - 60,
         expires: int = NOW + 3600, message_id: bytes | None = None) -> bytes:
    return seal_envelope(
        message, sender=sender.sender, recipient=recipient,
        recipient_public_key=recipient_public or SHE.encryption.public_key,
        message_id=message_id or rnd("id", name, n=16), created=created, expires=expires,
        ephemeral_secret=rnd("eph", name), policy=EnvelopeLayerOnly()).data


def header_of(envelope: bytes) -> dict[str, Any]:
    outer = json.loads(envelope)
    header: dict[str, Any] = json.loads(b64decode(outer["protected"]))
    return header


def signed(protected: bytes, signer: Any = EMB, label: bytes = crypto.ENVELOPE_LABEL) -> bytes:
    return dump_json({"protected": b64encode(protected),
                      "signature": b64encode(signer.signing.sign(label, protected))})


def unsigned(protected: bytes) -> bytes:
    return dump_json({"protected": b64encode(protected), "signature": b64encode(bytes(64))})


def header_bytes(header: dict[str, Any]) -> bytes:
    return dump_json(header)


def with_header(base: bytes, sign: bool = True, **changes: Any) -> bytes:
    header = header_of(base)
    for key, value in changes.items():
        if value is DELETE:
            header.pop(key, None)
        else:
            header[key] = value
    protected = header_bytes(header)
    return signed(protected) if sign else unsigned(protected)


DELETE = object()


def inner_envelope(inner: bytes, name: str, *, recipient_public: bytes | None = None,
                   ciphertext: bytes | None = None, **header_changes: Any) -> bytes:
    """A validly signed envelope around an arbitrary plaintext (or ciphertext)."""
    base = header_of(seal({"type": "x"}, name))
    public = recipient_public or SHE.encryption.public_key
    if ciphertext is None:
        ciphertext = crypto.sealed_box_seal(inner, public, rnd("eph2", name))
    base["ciphertext"] = b64encode(ciphertext)
    base.update(header_changes)
    return signed(header_bytes(base))


def inner_plain(message: Any, mid: str, *, sender: str = EMBASSY, recipient: str = SHELTER,
                v: Any = 1, extra: dict[str, Any] | None = None) -> bytes:
    obj = {"v": v, "id": mid, "sender": sender, "recipient": recipient, "message": message}
    obj.update(extra or {})
    return dump_json(obj)


def periodic(base: bytes, field: str, unit: bytes, count: int, tail: str = "") -> bytes:
    """An unsigned envelope whose header ``field`` is ``unit * count + tail``, written
    with a repeat marker: header whitespace is padded so that the repeated part starts on
    a base64 block boundary and its base64url is itself periodic (len(unit) == 3)."""
    assert len(unit) == 3
    header = header_of(base)
    header[field] = "\x00"
    prefix, suffix = header_bytes(header).split(b"\\u0000")
    suffix = tail.encode() + suffix
    while len(prefix) % 3:
        prefix = b"{ " + prefix[1:]
    text = (b64encode(prefix).encode() + repeat(b64encode(unit).encode(), count)
            + b64encode(suffix).encode())
    return (b'{"protected":"' + text + b'","signature":"' + b64encode(bytes(64)).encode()
            + b'"}')


def repeat(data: bytes, count: int) -> bytes:
    return f"@@REPEAT:{data.hex()}:{count}@@".encode()


# ----------------------------------------------------------------------------- the corpus


class Corpus:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}

    def add(self, name: str, body: bytes, code: str | None, *, kind: str = "post",
            content_type: str | None = JSON, status: int | None = None,
            digest: str = "body", chunked: bool = False, stall: bool = False,
            note: str = "", **extra: Any) -> None:
        if name in self.files:
            raise ValueError(f"duplicate case name {name}")
        if status is None:
            status = 200 if code in (None, "accepted", "duplicate") else ErrorCode(code).http_status
        file = f"{len(self.entries):03d}-{name}.bin"
        self.files[file] = body
        entry: dict[str, Any] = {"name": name, "file": file, "kind": kind, "status": status,
                                 "code": code, "note": note}
        if kind in ("post", "setup"):
            entry.update(content_type=content_type, chunked=chunked, receipt_digest=digest)
        if kind == "local_api":
            entry["content_type"] = content_type
        if kind == "raw":
            entry["stall"] = stall
        entry.update(extra)
        self.entries.append(entry)


def build() -> Corpus:
    c = Corpus()
    valid = seal(referral("setup", now=NOW - 60), "setup")
    c.add("setup-referral", valid, "accepted", kind="setup",
          note="a valid referral; accepted before the corpus runs (thread for replays)")
    fresh = seal(referral("fresh", now=NOW - 60), "fresh")  # valid, never delivered
    control = {"case_id": referral("setup", now=NOW)["case_id"],
               "thread_id": thread_id("setup"), "sent_at": NOW - 60}

    # -- transport: media type (checked first; body never read) -----------------------
    for i, ctype in enumerate(["text/plain", "application/xml", "multipart/form-data",
                               "application/x-www-form-urlencoded", "application/jose",
                               "application/json-patch+json", "application/octet-stream",
                               "text/json", "application/jsonx", "application/ json"]):
        c.add(f"media-type-{i}", fresh, "unsupported_media_type", content_type=ctype,
              digest="empty", note=f"Content-Type {ctype}")
    c.add("media-type-missing", fresh, "unsupported_media_type", content_type=None,
          digest="empty", note="no Content-Type")

    # -- transport: size -----------------------------------------------------------------
    c.add("oversize-declared", repeat(b"x", MAX_ENVELOPE_BYTES + 1), "too_large",
          digest="empty", note="Content-Length one byte over the limit")
    c.add("oversize-chunked", repeat(b"x", MAX_ENVELOPE_BYTES + 65536), "too_large",
          digest="empty", chunked=True, note="chunked, no declared length: cut while reading")
    c.add("oversize-json-string", b'{"protected":"' + repeat(b"A", MAX_ENVELOPE_BYTES)
          + b'","signature":""}', "too_large", digest="empty")
    c.add("limit-exact-junk", repeat(b" ", MAX_ENVELOPE_BYTES), "malformed",
          note="exactly at the limit: read, then not JSON")
    c.add("empty-body", b"", "malformed")

    # -- truncated bodies ---------------------------------------------------------------
    for cut in (1, 2, 10, 14, 15, 40, 100, len(valid) // 3, len(valid) // 2,
                len(valid) - 200, len(valid) - 90, len(valid) - 3, len(valid) - 2,
                len(valid) - 1):
        code = "malformed"
        c.add(f"truncated-{cut}", valid[:cut], code, note=f"valid envelope cut at {cut} bytes")

    # -- strict JSON ------------------------------------------------------------------------
    strict_json: list[tuple[str, bytes, str]] = [
        ("dup-key-protected", b'{"protected":"e30","protected":"e30","signature":"AA"}',
         "malformed"),
        ("dup-key-signature", valid[:-1] + b',"signature":"AA"}', "malformed"),
        ("nan", b'{"protected":NaN,"signature":"AA"}', "malformed"),
        ("infinity", b'{"protected":Infinity,"signature":"AA"}', "malformed"),
        ("neg-infinity", b'{"protected":-Infinity,"signature":"AA"}', "malformed"),
        ("float", b'{"protected":1.0,"signature":"AA"}', "malformed"),
        ("exponent", b'{"protected":1e5,"signature":"AA"}', "malformed"),
        ("int-2-53", b'{"protected":9007199254740992,"signature":"AA"}', "malformed"),
        ("int-neg-2-53", b'{"protected":-9007199254740992,"signature":"AA"}', "malformed"),
        ("int-4300-digits", b'{"protected":' + repeat(b"9", 5000) + b',"signature":"A"}',
         "malformed"),
        ("lone-surrogate", b'{"protected":"\\ud800","signature":"AA"}', "malformed"),
        ("lone-low-surrogate-key", b'{"\\udc00":"x","signature":"AA"}', "malformed"),
        ("invalid-utf8", b'{"protected":"\xff\xfe","signature":"AA"}', "malformed"),
        ("overlong-utf8", b'{"protected":"\xc0\xaf","signature":"AA"}', "malformed"),
        ("utf16-body", valid.decode().encode("utf-16"), "malformed"),
        ("bom", b"\xef\xbb\xbf" + valid, "malformed"),
        ("trailing-garbage", valid + b"x", "malformed"),
        ("two-documents", valid + valid, "malformed"),
        ("trailing-comma", b'{"protected":"e30","signature":"AA",}', "malformed"),
        ("single-quotes", b"{'protected':'e30','signature':'AA'}", "malformed"),
        ("comment", b'{"protected":"e30",/*x*/"signature":"AA"}', "malformed"),
        ("raw-control-char", b'{"protected":"e\x0130","signature":"AA"}', "malformed"),
        ("unquoted-key", b'{protected:"e30","signature":"AA"}', "malformed"),
        ("nul-byte", b'{"protected":"e30"\x00,"signature":"AA"}', "malformed"),
        ("deep-array-100", repeat(b"[", 100) + repeat(b"]", 100), "malformed"),
        ("deep-array-100000", repeat(b"[", 100000) + repeat(b"]", 100000), "malformed"),
        ("deep-object-3", b'{"protected":{"a":{"b":1}},"signature":"AA"}', "malformed"),
        ("deep-object-50000", repeat(b'{"a":', 50000) + b"1" + repeat(b"}", 50000),
         "malformed"),
        ("unclosed-deep", repeat(b"[", 200000), "malformed"),
        ("whitespace-only", b" \n\t ", "malformed"),
        ("json-null", b"null", "header_invalid"),
        ("json-array", b"[]", "header_invalid"),
        ("json-string", b'"envelope"', "header_invalid"),
        ("json-number", b"42", "header_invalid"),
        ("json-true", b"true", "header_invalid"),
        ("outer-empty", b"{}", "header_invalid"),
        ("outer-extra-key", valid[:-1] + b',"x":1}', "header_invalid"),
        ("outer-missing-signature", dump_json({"protected": json.loads(valid)["protected"]}),
         "header_invalid"),
        ("outer-case-changed", valid.replace(b'"protected"', b'"Protected"'),
         "header_invalid"),
    ]
    for name, body, code in strict_json:
        c.add(name, body, code)

    # -- base64url ------------------------------------------------------------------------
    outer = json.loads(valid)
    prot, sig = outer["protected"], outer["signature"]

    def outer_with(p: Any = prot, s: Any = sig) -> bytes:
        return dump_json({"protected": p, "signature": s})

    b64_cases: list[tuple[str, bytes, str]] = [
        ("b64-protected-padded", outer_with(p=prot + "=" * (-len(prot) % 4 or 4)),
         "bad_encoding"),
        ("b64-protected-plus", outer_with(p=prot.replace("-", "+").replace("_", "/")
                                          if ("-" in prot or "_" in prot) else "+" + prot[1:]),
         "bad_encoding"),
        ("b64-protected-space", outer_with(p=prot[:10] + " " + prot[10:]), "bad_encoding"),
        ("b64-protected-newline", outer_with(p=prot[:76] + "\n" + prot[76:]), "bad_encoding"),
        ("b64-protected-len-mod-1", outer_with(p=prot + "A" * ((1 - len(prot)) % 4 or 4)),
         "bad_encoding"),
        ("b64-protected-non-ascii", outer_with(p=prot[:5] + "é" + prot[6:]), "bad_encoding"),
        ("b64-protected-number", outer_with(p=12), "bad_encoding"),
        ("b64-protected-null", outer_with(p=None), "bad_encoding"),
        ("b64-protected-array", outer_with(p=[prot]), "bad_encoding"),
        ("b64-signature-short", outer_with(s=b64encode(bytes(63))), "bad_encoding"),
        ("b64-signature-long", outer_with(s=b64encode(bytes(65))), "bad_encoding"),
        ("b64-signature-empty", outer_with(s=""), "bad_encoding"),
        ("b64-signature-padded", outer_with(s=sig + "=="), "bad_encoding"),
        ("b64-signature-noncanonical", outer_with(s=sig[:-1] + "B"), "bad_encoding"),
        ("b64-signature-standard-alphabet", outer_with(s=sig.replace("-", "+").replace(
            "_", "/") if ("-" in sig or "_" in sig) else "/" + sig[1:]), "bad_encoding"),
    ]
    for name, body, code in b64_cases:
        c.add(name, body, code)

    # -- protected header schema (checked before the signature: unsigned is fine) ----------
    def header_case(name: str, code: str, sign: bool = False, **changes: Any) -> None:
        c.add(name, with_header(valid, sign=sign, **changes), code)

    header_case("hdr-version-2", "unsupported_version", v=2)
    header_case("hdr-version-0", "unsupported_version", v=0)
    header_case("hdr-version-string", "unsupported_version", v="1")
    header_case("hdr-version-true", "unsupported_version", v=True)
    header_case("hdr-version-missing", "unsupported_version", v=DELETE)
    for field in ("id", "created", "expires", "sender", "sender_key", "recipient",
                  "recipient_key", "ciphertext"):
        header_case(f"hdr-missing-{field}", "header_invalid", **{field: DELETE})
    header_case("hdr-extra-field", "header_invalid", type="referral")
    header_case("hdr-extra-case-id", "header_invalid", case_id="x")
    header_case("hdr-created-negative", "header_invalid", created=-1)
    header_case("hdr-created-string", "header_invalid", created=str(NOW))
    header_case("hdr-created-null", "header_invalid", created=None)
    header_case("hdr-expires-before-created", "header_invalid", expires=NOW - 120)
    header_case("hdr-expires-equals-created", "header_invalid", expires=NOW - 60)
    header_case("hdr-lifetime-over-30-days", "header_invalid", expires=NOW - 60 + 31 * 86400)
    header_case("hdr-sender-uppercase", "header_invalid", sender="PH-EMBASSY-KL")
    header_case("hdr-sender-empty", "header_invalid", sender="")
    header_case("hdr-sender-65-chars", "header_invalid", sender="a" * 65)
    header_case("hdr-sender-slash", "header_invalid", sender="ph/embassy")
    header_case("hdr-sender-number", "header_invalid", sender=7)
    c.add("hdr-sender-huge", periodic(valid, "sender", b"aaa", 200000), "header_invalid",
          note="a 600 kB sender id")
    header_case("hdr-recipient-leading-dot", "header_invalid", recipient=".shelter")
    header_case("hdr-recipient-unicode", "header_invalid", recipient="ph-shélter")
    header_case("hdr-id-15-bytes", "bad_encoding", id=b64encode(bytes(15)))
    header_case("hdr-id-17-bytes", "bad_encoding", id=b64encode(bytes(17)))
    header_case("hdr-id-padded", "bad_encoding", id=b64encode(bytes(16)) + "==")
    header_case("hdr-sender-key-wrong-length", "bad_encoding", sender_key=b64encode(bytes(9)))
    header_case("hdr-recipient-key-wrong-length", "bad_encoding",
                recipient_key=b64encode(bytes(33)))
    header_case("hdr-ciphertext-47-bytes", "bad_encoding", ciphertext=b64encode(bytes(47)))
    header_case("hdr-ciphertext-empty", "bad_encoding", ciphertext="")
    header_case("hdr-ciphertext-bad-b64", "bad_encoding", ciphertext="***")
    c.add("hdr-ciphertext-huge-string", periodic(valid, "ciphertext", b"AAA", 233334,
                                                 tail="AAA"), "bad_encoding",
          note="a 700 kB ciphertext whose length is 1 mod 4: never valid base64url")
    c.add("hdr-not-object", unsigned(b'["v",1]'), "header_invalid")
    c.add("hdr-not-json", unsigned(b"v=1;id=x"), "malformed")
    c.add("hdr-nested", unsigned(b'{"v":1,"x":{"y":1}}'), "malformed",
          note="the protected header is flat (depth 1)")
    c.add("hdr-dup-key", unsigned(header_bytes(header_of(valid))[:-1] + b',"v":1}'),
          "malformed")
    c.add("hdr-float-created", unsigned(header_bytes(header_of(valid)).replace(
        f'"created":{NOW - 60}'.encode(), f'"created":{NOW - 60}.0'.encode())), "malformed")

    # -- authentication ---------------------------------------------------------------------
    raw_sig = bytearray(b64decode(sig))
    for pos in (0, 1, 31, 32, 62, 63):
        flipped = bytearray(raw_sig)
        flipped[pos] ^= 0x80
        c.add(f"sig-bit-flip-{pos}", outer_with(s=b64encode(bytes(flipped))), "bad_signature")
    c.add("sig-zero", outer_with(s=b64encode(bytes(64))), "bad_signature")
    protected_raw = b64decode(prot)
    c.add("sig-receipt-label", signed(protected_raw, label=crypto.RECEIPT_LABEL),
          "bad_signature", note="cross-protocol: signed as a receipt")
    c.add("sig-directory-label", signed(protected_raw, label=crypto.DIRECTORY_LABEL),
          "bad_signature")
    c.add("sig-over-reserialised-header", outer_with(
        p=b64encode(json.dumps(json.loads(protected_raw)).encode())), "bad_signature",
          note="same header with spaces: the signature covers the exact bytes")
    c.add("sig-by-other-participant-key", signed(protected_raw, signer=LEG), "bad_signature",
          note="signed by another participant's key, header names the embassy's")
    c.add("swapped-keys-signing-with-encryption-seed",
          signed(protected_raw, signer=fixed_identity(EMBASSY, "swap")), "bad_signature")
    c.add("unknown-key-id", with_header(valid, sign=False,
                                        sender_key=ROGUE.signing.key_id), "unknown_key")
    c.add("unknown-key-rogue-signed", signed(header_bytes(
        {**header_of(valid), "sender_key": ROGUE.signing.key_id}), signer=ROGUE), "unknown_key")
    c.add("swapped-keys-encryption-key-id-as-sender-key", with_header(
        valid, sign=False, sender_key=EMB.encryption.key_id), "unknown_key",
          note="the sender's encryption key id where its signing key id belongs")
    for i, (who, label) in enumerate(((STR, "stranger"), (fixed_identity("zz-nobody"), "nobody"))):
        c.add(f"unknown-sender-{label}", seal(referral(f"u{i}", now=NOW - 60), f"u{i}",
                                              sender=who), "unknown_sender")
    c.add("revoked-key", seal(referral("rev", now=NOW - 60), "rev", sender=LEG),
          "revoked_key", note="signing key revoked an hour ago")
    c.add("not-for-me-other-participant", seal(referral("nfm", now=NOW - 60), "nfm",
                                               recipient=CLINIC,
                                               recipient_public=CLI.encryption.public_key),
          "not_for_me")
    c.add("not-for-me-unknown-recipient", seal(referral("nfm2", now=NOW - 60), "nfm2",
                                               recipient="zz-elsewhere",
                                               recipient_public=CLI.encryption.public_key),
          "not_for_me")
    c.add("not-for-me-old-encryption-key", seal(referral("nfm3", now=NOW - 60), "nfm3",
                                                recipient_public=OLD_SHELTER.encryption
                                                .public_key), "not_for_me")
    c.add("swapped-keys-signing-key-id-as-recipient-key", with_header(
        valid, recipient_key=SHE.signing.key_id), "not_for_me")
    c.add("expired", seal(referral("exp", now=NOW - 7200), "exp", created=NOW - 7200,
                          expires=NOW - 3600), "expired")
    c.add("expired-just-now", seal(referral("exp2", now=NOW - 7200), "exp2",
                                   created=NOW - 7200, expires=NOW), "expired")
    c.add("not-yet-valid", seal(referral("nyv", now=NOW), "nyv", created=NOW + 301,
                                expires=NOW + 7200), "not_yet_valid")
    c.add("not-yet-valid-far", seal(referral("nyv2", now=NOW), "nyv2", created=NOW + 86400,
                                    expires=NOW + 2 * 86400), "not_yet_valid")
    setup_mid = b64decode(header_of(valid)["id"])
    c.add("replayed-other-bytes", seal(referral("setup", now=NOW - 30), "replay",
                                       message_id=setup_mid), "replayed",
          note="the setup envelope's id with other bytes")
    c.add("replayed-other-thread", seal(referral("other", now=NOW - 30), "replay2",
                                        message_id=setup_mid), "replayed")
    c.add("duplicate-same-bytes", valid, "duplicate",
          note="the setup envelope again: its original receipt, nothing stored")

    # -- decryption and binding (validly signed by the embassy) -----------------------------
    mid = header_of(seal({"type": "x"}, "inner"))["id"]
    msg = referral("inner", now=NOW - 60)

    def inner_case(name: str, code: str, plaintext: bytes | None = None,
                   ciphertext: bytes | None = None, recipient_public: bytes | None = None,
                   note: str = "") -> None:
        c.add(name, inner_envelope(plaintext or b"", "inner", ciphertext=ciphertext,
                                   recipient_public=recipient_public), code, note=note)

    zero_eph = bytes(32) + bytes(64)
    inner_case("weak-key-zero-ephemeral", "weak_key", ciphertext=zero_eph,
               note="all-zero ephemeral X25519 key")
    inner_case("weak-key-low-order-ephemeral", "weak_key",
               ciphertext=bytes([1]) + bytes(31) + bytes(64), note="X25519 point of order 1")
    inner_case("decrypt-random-ciphertext", "decrypt_failed",
               ciphertext=rnd("ct", n=60) + rnd("ct2", n=60))
    inner_case("decrypt-wrong-recipient-key", "decrypt_failed", plaintext=inner_plain(msg, mid),
               recipient_public=OLD_SHELTER.encryption.public_key,
               note="sealed to another key, header names ours")
    good_ct = crypto.sealed_box_seal(inner_plain(msg, mid), SHE.encryption.public_key,
                                     rnd("eph2", "inner"))
    inner_case("decrypt-tag-flipped", "decrypt_failed",
               ciphertext=good_ct[:-1] + bytes([good_ct[-1] ^ 1]))
    inner_case("decrypt-truncated-ciphertext", "decrypt_failed", ciphertext=good_ct[:60])
    inner_case("binding-other-id", "binding_mismatch",
               plaintext=inner_plain(msg, b64encode(bytes(16))))
    inner_case("binding-other-sender", "binding_mismatch",
               plaintext=inner_plain(msg, mid, sender=LEGAL))
    inner_case("binding-other-recipient", "binding_mismatch",
               plaintext=inner_plain(msg, mid, recipient=CLINIC),
               note="surreptitious forwarding: inner addressed to someone else")
    inner_case("inner-version-2", "unsupported_version", plaintext=inner_plain(msg, mid, v=2))
    inner_case("inner-not-json", "malformed", plaintext=b"not json at all")
    inner_case("inner-dup-key", "malformed",
               plaintext=inner_plain(msg, mid)[:-1] + b',"v":1}')
    inner_case("inner-nan", "malformed", plaintext=inner_plain(msg, mid).replace(
        b'"seq":1', b'"seq":NaN'))
    inner_case("inner-deep", "malformed",
               plaintext=inner_plain(msg, mid)[:-1] + b',"x":' + b"[" * 40 + b"]" * 40 + b"}")
    inner_case("inner-array", "schema_invalid", plaintext=b"[1,2,3]")
    inner_case("inner-extra-field", "schema_invalid",
               plaintext=inner_plain(msg, mid, extra={"x": 1}))
    inner_case("inner-message-string", "schema_invalid", plaintext=inner_plain("hello", mid))

    # -- message schema (sealed without the sender's policy) --------------------------------
    def msg_case(name: str, code: str, message: Any, note: str = "") -> None:
        c.add(name, seal(message, name), code, note=note)

    def changed(index: str, **changes: Any) -> dict[str, Any]:
        m = referral(index, now=NOW - 60)
        for key, value in changes.items():
            if value is DELETE:
                m.pop(key, None)
            else:
                m[key] = value
        return m

    msg_case("schema-unknown-type", "schema_invalid", changed("s1", type="note"))
    msg_case("schema-type-missing", "schema_invalid", changed("s2", type=DELETE))
    msg_case("schema-no-consent", "schema_invalid", changed("s3", consent=DELETE))
    msg_case("schema-seq-zero", "schema_invalid", changed("s4", seq=0))
    msg_case("schema-seq-string", "schema_invalid", changed("s5", seq="1"))
    msg_case("schema-case-id-not-b64", "schema_invalid", changed("s6", case_id="case 1"))
    msg_case("schema-extra-field", "schema_invalid", changed("s7", gossip="x"))
    msg_case("schema-unknown-section", "schema_invalid",
             changed("s8", sections={"identity": {"given_name": "A"}, "astrology": {}}))
    msg_case("schema-sent-at-string", "schema_invalid", changed("s9", sent_at="yesterday"))
    msg_case("schema-empty-object", "schema_invalid", {})
    msg_case("schema-huge-narrative", "schema_invalid", _with_narrative(
        changed("s10"), "N" * 4001), note="a free-text field one over its maxLength (4000)")
    msg_case("schema-attachment-bad-digest", "schema_invalid", _with_attachment_digest(
        changed("s11"), b64encode(bytes(32))), note="inline attachment whose digest lies")

    # -- consent (the receiver's policy refuses what the sender did not check) --------------
    def consent_case(name: str, code: str, mutate: Callable[[dict[str, Any]], None],
                     note: str = "") -> None:
        m = referral(name, now=NOW - 60)
        mutate(m)
        msg_case(f"consent-{name}", code, m, note=note)

    consent_case("category-outside-scope", "consent_violation",
                 lambda m: m["consent"]["scope"].update(data_categories=["identity"]),
                 note="health, incident, ... sent although she agreed to identity only")
    consent_case("attachment-outside-scope", "consent_violation", _attachment_outside)
    consent_case("purpose-outside-scope", "consent_violation",
                 lambda m: m["consent"]["scope"].update(purposes=["safe_return"]))
    consent_case("recipient-outside-scope", "consent_violation",
                 lambda m: m["consent"]["scope"].update(recipients={
                     "participants": [CLINIC], "sectors": ["health"]}))
    consent_case("given-after-sent", "consent_violation",
                 lambda m: m["consent"].update(given_at=m["sent_at"] + 1))
    consent_case("refused-service-requested", "consent_violation", _refused_service)
    consent_case("expired", "consent_expired",
                 lambda m: m["consent"].update(given_at=NOW - 90 * 86400,
                                               expires_at=NOW - 86400))

    # -- lifecycle (control messages carry no data: schema, then the thread) ---------------
    def lc(name: str, code: str, message: dict[str, Any], note: str = "") -> None:
        msg_case(f"lifecycle-{name}", code, message, note=note)

    lc("referrer-accepts", "invalid_transition", {"type": "accept", "seq": 2, **control},
       note="only the receiver may accept")
    lc("referrer-declines", "invalid_transition",
       {"type": "decline", "seq": 2, "reason": "no_capacity", **control})
    lc("referral-again", "invalid_transition",
       {**referral("setup", now=NOW - 60), "seq": 1}, note="seq 1 already used")
    lc("cancel-seq-gap", "sequence_gap",
       {"type": "cancel", "seq": 5, "reason": "survivor_request", **control})
    lc("accept-unknown-thread", "invalid_transition",
       {"type": "accept", "seq": 1, "case_id": control["case_id"],
        "thread_id": thread_id("nowhere"), "sent_at": NOW - 60})
    lc("other-case-same-thread", "invalid_transition",
       {"type": "cancel", "seq": 2, "reason": "survivor_request", **control,
        "case_id": referral("elsewhere", now=NOW)["case_id"]})

    # -- raw sockets: slow-loris and broken HTTP -------------------------------------------
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {JSON}\r\n").encode()
    c.add("slowloris-partial-body", head + b"Content-Length: 5000\r\n\r\n" + valid[:100],
          "malformed", kind="raw", stall=True,
          note="declares 5000 bytes, sends 100, stalls: deadline, signed 400, closed")
    c.add("slowloris-headers-only", head + b"Content-Length: 100\r\n\r\n", "malformed",
          kind="raw", stall=True)
    c.add("slowloris-chunked", head + b"Transfer-Encoding: chunked\r\n\r\n64\r\n"
          + valid[:100] + b"\r\n", "malformed", kind="raw", stall=True)
    c.add("slowloris-one-byte", head + b"Content-Length: 2\r\n\r\n{", "malformed",
          kind="raw", stall=True)
    c.add("short-body-then-close", head + b"Content-Length: 5000\r\n\r\n" + valid[:100],
          "malformed", kind="raw", stall=False, may_close=True,
          note="declares 5000 bytes, sends 100, half-closes: truncated; the node answers "
               "malformed or, the client having gone, just closes")
    c.add("http-garbage-request-line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
          None, kind="raw", status=400, note="a TLS ClientHello on the plain port")
    c.add("http-bad-content-length", head + b"Content-Length: -1\r\n\r\n", None, kind="raw",
          status=400)
    c.add("http-two-content-lengths", head + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\n"
          b"{}}", None, kind="raw", status=400, note="request smuggling attempt")
    c.add("http-get-envelopes", f"GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), None,
          kind="raw", status=405)
    c.add("http-unknown-path", b"POST /admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
          None, kind="raw", status=404)
    c.add("http-path-traversal", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", None,
          kind="raw", status=404)
    c.add("http-huge-header", head + b"X-Pad: " + repeat(b"a", 200000) + b"\r\n\r\n", None,
          kind="raw", status=400, note="a 200 kB header line")

    # -- local API: bad tokens and bad JSON (RFC 9457 problem+json answers) ---------------
    def api(name: str, code: str, *, method: str = "GET", path: str = "/api/v1/cases",
            auth: str | None = "caseworker", body: bytes = b"",
            content_type: str | None = None, note: str = "") -> None:
        c.add(f"api-{name}", body, code, kind="local_api", method=method, path=path,
              auth=auth, content_type=content_type, note=note)

    well_formed_unknown = "Bearer cw_" + b64encode(rnd("unknown-token"))
    for name, header in (("missing", None), ("empty", ""), ("scheme-basic",
                         "Basic Y2FzZXdvcmtlcjpwYXNzd29yZA=="),
                         ("bearer-empty", "Bearer "), ("no-prefix",
                         "Bearer " + b64encode(rnd("t"))), ("short", "Bearer cw_abc"),
                         ("bad-chars", "Bearer cw_" + "!" * 43), ("unknown",
                         well_formed_unknown), ("huge", "Bearer cw_" + "A" * 6000),
                         ("two-tokens", well_formed_unknown + ", " + well_formed_unknown),
                         ("sql", "Bearer cw_' OR '1'='1' --" + "A" * 25)):
        api(f"token-{name}", "unauthorized", auth=f"literal:{header}" if header is not None
            else None, note="no valid bearer token")
    api("token-unknown-on-post", "unauthorized", method="POST",
        auth=f"literal:{well_formed_unknown}", body=b"{}", content_type=JSON,
        note="authentication before the body is looked at")
    api("token-revoked", "unauthorized", auth="revoked")
    api("role-auditor-creates-referral", "forbidden", method="POST", auth="auditor",
        body=dump_json({"recipient": SHELTER}), content_type=JSON)
    bad_json: list[tuple[str, bytes, str, str | None]] = [
        ("not-json", b"recipient=ph-shelter-manila", "malformed", JSON),
        ("truncated", b'{"recipient":"ph-shel', "malformed", JSON),
        ("dup-key", b'{"recipient":"a","recipient":"b"}', "malformed", JSON),
        ("nan", b'{"recipient":NaN}', "malformed", JSON),
        ("float", b'{"n":1.5}', "malformed", JSON),
        ("lone-surrogate", b'{"recipient":"\\ud800"}', "malformed", JSON),
        ("invalid-utf8", b'{"recipient":"\xff"}', "malformed", JSON),
        ("deep", b"[" * 5000 + b"]" * 5000, "malformed", JSON),
        ("empty", b"", "malformed", JSON),
        ("text-plain", b'{"recipient":"x"}', "unsupported_media_type", "text/plain"),
        ("no-content-type", b'{"recipient":"x"}', "unsupported_media_type", None),
        ("array", b"[]", "schema_invalid", JSON),
        ("string", b'"referral"', "schema_invalid", JSON),
        ("empty-object", b"{}", "schema_invalid", JSON),
        ("unknown-field", b'{"recipient":"ph-shelter-manila","x":1}', "schema_invalid", JSON),
    ]
    for name, body, code, ctype in bad_json:
        api(f"json-{name}", code, method="POST", body=body, content_type=ctype)
    api("json-oversize", "too_large", method="POST",
        body=b'{"x":"' + repeat(b"a", 2 * MAX_ENVELOPE_BYTES) + b'"}', content_type=JSON)
    return c


def _with_narrative(message: dict[str, Any], text: str) -> dict[str, Any]:
    message["sections"]["incident"]["narrative"] = text
    return message


def _with_attachment_digest(message: dict[str, Any], digest: str) -> dict[str, Any]:
    for attachment in message["attachments"]:
        if "inline" in attachment:
            attachment["digest"] = digest
    return message


def _attachment_outside(message: dict[str, Any]) -> None:
    scope = message["consent"]["scope"]
    scope["data_categories"] = sorted(set(message["sections"]))
    for attachment in message["attachments"]:
        attachment["category"] = "children_dependants"
    scope["data_categories"].remove("children_dependants")
    message["sections"].pop("children_dependants", None)


def _refused_service(message: dict[str, Any]) -> None:
    refused = message["consent"]["services_refused"]
    needs = message["sections"].get("needs", {})
    wanted = needs.get("services_requested") or needs.get("services")
    if isinstance(wanted, list):
        wanted.append(refused[0])


# ----------------------------------------------------------------------------- main


def write(check: bool) -> int:
    corpus = build()
    manifest = json.dumps({"world": {"now": NOW, "receiver": SHELTER,
                                     "senders": [EMBASSY, LEGAL, CLINIC],
                                     "revoked": {LEGAL: REVOKED_AT}},
                           "cases": corpus.entries}, indent=1, ensure_ascii=False
                          ).encode() + b"\n"
    wanted = {MANIFEST: manifest, **{CASES / name: data for name, data in corpus.files.items()}}
    if check:
        stale = [str(p) for p, data in wanted.items()
                 if not p.exists() or p.read_bytes() != data]
        extra = [str(p) for p in CASES.glob("*") if p not in wanted]
        for path in stale + extra:
            print(f"differs: {path}")
        return 1 if stale or extra else 0
    CASES.mkdir(parents=True, exist_ok=True)
    for path in CASES.glob("*"):
        if path not in wanted:
            path.unlink()
    for path, data in wanted.items():
        path.write_bytes(data)
    print(f"{len(corpus.entries)} cases written to {CASES}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    sys.exit(write(parser.parse_args().check))
