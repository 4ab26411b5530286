"""A small client of the node's local API, used by the ``caseway`` case commands and the demo.

Rules of this module:

1. Standard library only (``urllib``): the commands are short-lived and make one or two
   requests each, so there is nothing for an async client to win.
2. Every failure is one of two typed errors that read as a plain sentence:
   :class:`ApiProblem` (the node answered with RFC 9457 problem+json, e.g. a refused
   referral) and :class:`NodeUnreachable` (no answer at all). Nothing else escapes
   :meth:`NodeClient.request` for HTTP or network trouble.
3. The token is sent only as ``Authorization: Bearer``; it never appears in an error.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROBLEM_TYPE = "application/problem+json"
DEFAULT_TIMEOUT = 30.0


class ClientError(Exception):
    """Base of the errors of this module; ``str()`` is one plain sentence."""


@dataclass
class ApiProblem(ClientError):
    """The node refused the request (RFC 9457 problem details)."""

    status: int
    code: str
    title: str = ""
    detail: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.code in ("unauthorized", "forbidden"):
            verb = "not allowed"
        elif self.status == 404:
            verb = "not found"
        elif self.status >= 500:
            verb = "the node failed"
        else:
            verb = "refused"
        text = self.detail or self.title
        return f"{verb}: {self.code} — {text}" if text else f"{verb}: {self.code}"


class NodeUnreachable(ClientError):
    def __init__(self, url: str, reason: str = "") -> None:
        self.url = url
        self.reason = reason
        super().__init__(url)

    def __str__(self) -> str:
        return f"cannot reach the node at {self.url} — is `caseway serve` running?"


def _problem(status: int, body: bytes, reason: str) -> ApiProblem:
    try:
        obj = json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, ValueError):
        obj = {}
    if not isinstance(obj, dict):
        obj = {}
    code = obj.get("code")
    if not isinstance(code, str) or not code:
        type_uri = obj.get("type")
        # urn:caseway:error:<code> (node/openapi.json); a URL's last segment otherwise
        code = (re.split(r"[:/]", type_uri.rstrip("/"))[-1] if isinstance(type_uri, str)
                and type_uri not in ("", "about:blank") else f"http_{status}")
    title = obj.get("title") if isinstance(obj.get("title"), str) else reason
    detail = obj.get("detail") if isinstance(obj.get("detail"), str) else ""
    extra = {k: v for k, v in obj.items() if k not in ("type", "title", "status", "detail",
                                                       "code", "instance")}
    return ApiProblem(status, code, title or "", detail or "", extra)


class NodeClient:
    """The local API at ``base_url`` (``http://127.0.0.1:8444``), with a bearer token."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._ssl = ssl_context

    def request(self, method: str, path: str, body: Any = None, *,
                query: Mapping[str, Any] | None = None) -> Any:
        """Send one request; returns the parsed JSON answer (``None`` for an empty one)."""
        url = self.base_url + path
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        data = None
        headers = {"Accept": f"application/json, {PROBLEM_TYPE}"}
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout,
                                        context=self._ssl) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _problem(exc.code, exc.read(), exc.reason or "") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            raise NodeUnreachable(self.base_url, type(exc).__name__) from None
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiProblem(502, "bad_answer", "the node's answer is not JSON") from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def healthy(self) -> bool:
        try:
            answer = self.get("/healthz")
        except ClientError:
            return False
        return isinstance(answer, dict) and answer.get("status") == "ok"
