"""Service-account tokens: issued by ``serviceaccounts/token`` (TokenRequest),
accepted as bearer tokens.

Tokens are JWTs signed with HS256 and a key kept in the data dir, carrying the
upstream claims (``sub: system:serviceaccount:<ns>:<name>``, ``kubernetes.io``
with namespace and service account), so they survive restarts and identify the
service account as upstream's do.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_EXPIRATION = 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Identity:
    name: str
    uid: str
    groups: tuple[str, ...]


class TokenIssuer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_dir(cls, directory: Path) -> TokenIssuer:
        path = directory / "service-account.key"
        if not path.exists():
            path.write_bytes(secrets.token_bytes(32))
            os.chmod(path, 0o600)
        return cls(path.read_bytes())

    @classmethod
    def ephemeral(cls) -> TokenIssuer:
        return cls(secrets.token_bytes(32))

    def issue(
        self,
        namespace: str,
        name: str,
        uid: str,
        now: datetime.datetime,
        expiration_seconds: int,
        audiences: list[str],
    ) -> tuple[str, datetime.datetime]:
        expires = now + datetime.timedelta(seconds=expiration_seconds)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": audiences or [ISSUER],
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        }
        header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
        payload = _b64(orjson.dumps(claims))
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}", expires

    def verify(self, token: str, now: datetime.datetime) -> Identity | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(expected, _unb64(parts[2])):
                return None
            claims = orjson.loads(_unb64(parts[1]))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if int(claims.get("exp", 0)) < now.timestamp():
            return None
        info = claims.get("kubernetes.io") or {}
        namespace = info.get("namespace", "")
        account = info.get("serviceaccount") or {}
        return Identity(
            str(claims.get("sub", "")),
            str(account.get("uid", "")),
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
        )
