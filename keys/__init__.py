"""Caseway identities and trust: key pairs, keystore files, the signed trust directory."""
