"""Fixed, public test key material shared by every vector generator.

These seeds are published test data: never use them for a real node. Each is 32 bytes,
written in hex so another stack can load them directly.
"""

from __future__ import annotations

# Unix time at which the vectors are "opened": 2026-01-15T00:00:00Z.
NOW = 1768435200
CREATED = NOW - 60
EXPIRES = NOW + 7 * 24 * 3600

PARTICIPANTS = {
    # participant id: (Ed25519 signing seed, X25519 encryption secret)
    "ph-embassy-kl": (
        "0101010101010101010101010101010101010101010101010101010101010101",
        "0202020202020202020202020202020202020202020202020202020202020202",
    ),
    "ph-shelter-manila": (
        "0303030303030303030303030303030303030303030303030303030303030303",
        "0404040404040404040404040404040404040404040404040404040404040404",
    ),
    "my-immigration-kl": (
        "0505050505050505050505050505050505050505050505050505050505050505",
        "0606060606060606060606060606060606060606060606060606060606060606",
    ),
    "ph-legal-cebu": (
        "0707070707070707070707070707070707070707070707070707070707070707",
        "0808080808080808080808080808080808080808080808080808080808080808",
    ),
}
# A second signing key for the embassy: "signature by another key" vectors.
OTHER_SIGNING_SEED = "0909090909090909090909090909090909090909090909090909090909090909"
# Directory authority (regional coordination body).
AUTHORITY_SEED = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0"
OTHER_AUTHORITY_SEED = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
# Per-vector randomness: message ids and sealed-box ephemeral secrets, derived by index.


def message_id(n: int) -> str:
    """16 bytes in hex: 0x10 repeated, last byte = n."""
    return ("10" * 15) + f"{n:02x}"


def ephemeral_secret(n: int) -> str:
    """32 bytes in hex: 0xe0 repeated, last byte = n."""
    return ("e0" * 31) + f"{n:02x}"
