"""Kubeconfigs resolve to server, TLS material and credentials the way kubectl
reads them, and nothing secret is left on disk after the TLS context is built."""

from __future__ import annotations

import base64
import datetime
import ssl
import tempfile
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nodeless.client import kubeconfigs


def self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(path: Path, config: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def config_with(
    user: dict[str, object], cluster: dict[str, object], namespace: str = ""
) -> dict[str, object]:
    context: dict[str, object] = {"cluster": "k", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "k", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": context}],
        "current-context": "c",
    }


def test_inline_certificates_are_decoded(tmp_path: Path) -> None:
    cert, key = self_signed()
    path = write(
        tmp_path / "config",
        config_with(
            {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            {"server": "https://127.0.0.1:6443/", "certificate-authority-data": b64(cert)},
            namespace="team",
        ),
    )

    creds = kubeconfigs.load(path)

    assert creds.server == "https://127.0.0.1:6443"
    assert creds.namespace == "team"
    assert (creds.ca_pem, creds.client_cert_pem, creds.client_key_pem) == (cert, cert, key)


def test_file_references_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    cert, _ = self_signed()
    (tmp_path / "ca.crt").write_bytes(cert)
    (tmp_path / "token").write_text("abc123\n")
    path = write(
        tmp_path / "config",
        config_with(
            {"tokenFile": "token"},
            {"server": "https://example:6443", "certificate-authority": "ca.crt"},
        ),
    )

    creds = kubeconfigs.load(path)

    assert creds.ca_pem == cert
    assert creds.token == "abc123"
    assert creds.namespace == "default"


def test_the_ssl_context_holds_the_client_certificate_and_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    creds = kubeconfigs.Credentials(
        server="https://127.0.0.1:1", ca_pem=cert, client_cert_pem=cert, client_key_pem=key
    )

    context = creds.ssl_context()

    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert list(scratch.iterdir()) == [], "the PEMs are removed once loaded"


def test_plain_http_needs_no_ssl_context() -> None:
    assert kubeconfigs.Credentials(server="http://127.0.0.1:8080").ssl_context() is None


def test_insecure_skip_tls_verify_turns_verification_off(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        config_with({}, {"server": "https://x:1", "insecure-skip-tls-verify": True}),
    )

    context = kubeconfigs.load(path).ssl_context()

    assert context is not None and context.verify_mode == ssl.CERT_NONE


def test_a_named_context_is_chosen_over_the_current_one(tmp_path: Path) -> None:
    config = config_with({"token": "one"}, {"server": "https://one:1"})
    config["clusters"] = [
        {"name": "k", "cluster": {"server": "https://one:1"}},
        {"name": "k2", "cluster": {"server": "https://two:2"}},
    ]
    config["contexts"] = [
        {"name": "c", "context": {"cluster": "k", "user": "u"}},
        {"name": "other", "context": {"cluster": "k2", "user": "u"}},
    ]
    path = write(tmp_path / "config", config)

    assert kubeconfigs.load(path).server == "https://one:1"
    assert kubeconfigs.load(path, context="other").server == "https://two:2"
    with pytest.raises(kubeconfigs.KubeconfigError):
        kubeconfigs.load(path, context="missing")


def test_exec_plugins_are_refused_explicitly(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        config_with({"exec": {"command": "aws"}}, {"server": "https://x:1"}),
    )

    with pytest.raises(kubeconfigs.KubeconfigError, match="exec"):
        kubeconfigs.load(path)


def test_a_cluster_without_server_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "config", config_with({}, {}))

    with pytest.raises(kubeconfigs.KubeconfigError, match="no server"):
        kubeconfigs.load(path)
