"""Registry credentials from ``imagePullSecrets``, matched to an image as the kubelet does.

A pod's pull secrets are ``kubernetes.io/dockerconfigjson`` (or the legacy
``dockercfg``) Secrets: JSON maps from a registry key (``127.0.0.1:5000``,
``https://index.docker.io/v1/``, ``*.example.com/team``) to a user name and
password. The provider holds no API client (it sits below the API layer), so
whoever builds it passes a ``CredentialsLookup`` that fetches the Secrets'
documents; this module decodes them and picks, for one image, every entry
whose key matches its registry and repository, most specific first. The
kubelet tries those in order until a pull succeeds; so does the provider.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from nodeless.instances.providers.cri import imagerefs
from nodeless.instances.providers.cri import runtime_pb2 as pb

DOCKER_CONFIG_JSON_KEY = ".dockerconfigjson"
DOCKER_CFG_KEY = ".dockercfg"
DOCKER_HUB_HOSTS = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)

DockerConfig = Mapping[str, Any]
# (namespace, secret names) -> the Secrets' docker config documents; names
# that do not exist are skipped, as the kubelet does (with a warning Event).
CredentialsLookup = Callable[[str, Sequence[str]], Awaitable[Sequence[DockerConfig]]]


class CredentialsError(ValueError):
    """A pull secret that is not a docker config."""


def docker_config_from_secret(secret: Mapping[str, Any]) -> dict[str, Any]:
    """The docker config of a ``dockerconfigjson`` or ``dockercfg`` Secret,
    as ``{"auths": {...}}``. Raises ``CredentialsError``."""
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    for key in (DOCKER_CONFIG_JSON_KEY, DOCKER_CFG_KEY):
        raw: str | None = None
        if key in data:
            try:
                raw = base64.b64decode(str(data[key]), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise CredentialsError(f"{key} of the secret is not base64") from None
        elif key in string_data:
            raw = str(string_data[key])
        if raw is None:
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            raise CredentialsError(f"{key} of the secret is not JSON") from None
        if not isinstance(doc, dict):
            raise CredentialsError(f"{key} of the secret is not a JSON object")
        # .dockercfg is the bare map of .dockerconfigjson's "auths"
        return doc if key == DOCKER_CONFIG_JSON_KEY else {"auths": doc}
    raise CredentialsError(f"the secret has neither {DOCKER_CONFIG_JSON_KEY} nor {DOCKER_CFG_KEY}")


def credentials_for(image: str, configs: Sequence[DockerConfig]) -> list[pb.AuthConfig]:
    """Every credential of ``configs`` that applies to ``image``, the most
    specific key first (then in the order given). Malformed entries are
    skipped."""
    try:
        ref = imagerefs.parse(image)
    except imagerefs.InvalidImageName:
        return []
    found: list[tuple[int, int, pb.AuthConfig]] = []
    for config in configs:
        auths = config.get("auths") if isinstance(config, Mapping) else None
        if not isinstance(auths, Mapping):
            continue
        for key, entry in auths.items():
            if not isinstance(entry, Mapping):
                continue
            specificity = _match(str(key), ref)
            if specificity is None:
                continue
            auth = _auth_config(str(key), entry)
            if auth is not None:
                found.append((-specificity, len(found), auth))
    return [auth for _, _, auth in sorted(found, key=lambda t: (t[0], t[1]))]


def _match(key: str, ref: imagerefs.ImageRef) -> int | None:
    """How specifically ``key`` names ``ref``'s repository (longer is more
    specific), or None when it does not. As the kubelet's ``URLsMatch``:
    ports must be equal, host names match part by part with globs
    (``*.example.com`` matches ``a.example.com``, not ``a.b.example.com``),
    and a key's path must be a prefix of the repository's."""
    host, path = _parse_key(key)
    if not host:
        return None
    if host in DOCKER_HUB_HOSTS:
        host = imagerefs.DEFAULT_DOMAIN
    key_host, _, key_port = host.partition(":")
    domain_host, _, domain_port = ref.domain.lower().partition(":")
    if key_port != domain_port:
        return None
    key_parts, domain_parts = key_host.split("."), domain_host.split(".")
    if len(key_parts) != len(domain_parts) or not all(
        fnmatch.fnmatchcase(d, k) for k, d in zip(key_parts, domain_parts, strict=True)
    ):
        return None
    if path and ref.path != path and not ref.path.startswith(path + "/"):
        return None
    return len(host) + len(path)


def _parse_key(key: str) -> tuple[str, str]:
    """``https://host:port/path/`` → ``(host:port, path)``; Docker Hub's
    ``/v1/`` and ``/v2/`` API paths name the whole registry."""
    text = key.strip()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
            break
    host, _, path = text.partition("/")
    path = path.strip("/")
    if path in ("v1", "v2"):
        path = ""
    return host.lower(), path


def _auth_config(key: str, entry: Mapping[str, Any]) -> pb.AuthConfig | None:
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    encoded = str(entry.get("auth") or "")
    if encoded and not (username or password):
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        if not sep:
            return None
    identity_token = str(entry.get("identitytoken") or "")
    registry_token = str(entry.get("registrytoken") or "")
    if not (username or password or identity_token or registry_token):
        return None
    host, _ = _parse_key(key)
    if host in DOCKER_HUB_HOSTS:
        host = "registry-1.docker.io"  # the host containerd resolves docker.io to
    return pb.AuthConfig(
        username=username,
        password=password,
        # containerd compares the URL's host with the registry's; the scheme
        # is only there to make it a URL
        server_address=f"https://{host}",
        identity_token=identity_token,
        registry_token=registry_token,
    )
