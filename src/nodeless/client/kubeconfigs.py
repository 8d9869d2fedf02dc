"""Reading a kubeconfig into what an HTTPS client needs: server, TLS, credentials.

Only the parts `nodeless up` writes and kubectl users commonly have are
understood: inline or file CA, client certificate and key (inline or file),
bearer token (inline or file), ``insecure-skip-tls-verify`` and the context's
default namespace. Exec and auth-provider plugins are refused explicitly.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubeconfigError(ValueError):
    """The kubeconfig is missing something this client needs, or asks for
    something it does not support."""


@dataclass(frozen=True)
class Credentials:
    """One kubeconfig context, resolved: where the API is and how to prove who we are."""

    server: str
    namespace: str = "default"
    ca_pem: bytes = b""
    insecure: bool = False
    client_cert_pem: bytes = b""
    client_key_pem: bytes = b""
    token: str = ""
    tls_server_name: str = ""

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``https`` servers (None for plain ``http``).

        ``ssl`` loads client certificates only from files, so the PEMs go to a
        private temporary directory for the duration of the load and are
        removed straight after: nothing secret outlives this call on disk.
        """
        if not self.server.startswith("https://"):
            return None
        if self.ca_pem:
            context = ssl.create_default_context(cadata=self.ca_pem.decode())
        else:
            context = ssl.create_default_context()
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert_pem and self.client_key_pem:
            with tempfile.TemporaryDirectory(prefix="nodeless-client-") as scratch:
                os.chmod(scratch, 0o700)
                cert = Path(scratch) / "client.crt"
                key = Path(scratch) / "client.key"
                _write_private(cert, self.client_cert_pem)
                _write_private(key, self.client_key_pem)
                context.load_cert_chain(str(cert), str(key))
        return context


def load(path: str | os.PathLike[str], context: str = "") -> Credentials:
    """The credentials of ``context`` (default: the current context) in the file."""
    file = Path(path)
    try:
        config = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise KubeconfigError(f"cannot read kubeconfig {file}: {e}") from e
    if not isinstance(config, dict):
        raise KubeconfigError(f"kubeconfig {file} is not a mapping")
    base = file.parent
    name = context or config.get("current-context") or ""
    ctx = _named(config, "contexts", "context", name) if name else None
    if ctx is None:
        contexts = config.get("contexts") or []
        if name or len(contexts) > 1:
            raise KubeconfigError(f"kubeconfig {file} has no context {name!r}")
        ctx = (contexts[0].get("context") if contexts else None) or {}
    cluster = _named(config, "clusters", "cluster", ctx.get("cluster", ""))
    if cluster is None:
        clusters = config.get("clusters") or []
        if len(clusters) != 1:
            raise KubeconfigError(f"kubeconfig {file} has no cluster {ctx.get('cluster')!r}")
        cluster = clusters[0].get("cluster") or {}
    user = _named(config, "users", "user", ctx.get("user", "")) or {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeconfigError(f"kubeconfig {file}: cluster has no server")
    for unsupported in ("exec", "auth-provider"):
        if user.get(unsupported):
            raise KubeconfigError(f"kubeconfig {file}: user {unsupported!r} is not supported")
    token = str(user.get("token") or "")
    if not token and user.get("tokenFile"):
        token = _read(base, str(user["tokenFile"])).decode().strip()
    return Credentials(
        server=server.rstrip("/"),
        namespace=str(ctx.get("namespace") or "default"),
        ca_pem=_data_or_file(cluster, "certificate-authority-data", "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        client_cert_pem=_data_or_file(user, "client-certificate-data", "client-certificate", base),
        client_key_pem=_data_or_file(user, "client-key-data", "client-key", base),
        token=token,
        tls_server_name=str(cluster.get("tls-server-name") or ""),
    )


def _named(config: dict[str, Any], section: str, field: str, name: str) -> dict[str, Any] | None:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(field)
            return value if isinstance(value, dict) else {}
    return None


def _data_or_file(section: dict[str, Any], data_key: str, file_key: str, base: Path) -> bytes:
    data = section.get(data_key)
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except ValueError as e:
            raise KubeconfigError(f"{data_key} is not valid base64") from e
    path = section.get(file_key)
    return _read(base, str(path)) if path else b""


def _read(base: Path, name: str) -> bytes:
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = base / path
    try:
        return path.read_bytes()
    except OSError as e:
        raise KubeconfigError(f"cannot read {path}: {e}") from e


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
