"""Caseway protocol, sans-I/O: bytes, keys, a clock value and randomness in; bytes or typed
results out. Nothing here opens a socket or a file, reads the clock or draws randomness."""

from .errors import CasewayError, ErrorCode

__all__ = ["CasewayError", "ErrorCode"]
