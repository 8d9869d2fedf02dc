"""The PKI of one Nodeless cluster: a CA, a serving certificate, an admin client
certificate and a bearer token, made on first start and kept in the data dir,
plus the kubeconfig that embeds them."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=3650)
# kubeadm's (and kind's) name for the cluster admin, which clients' tests expect.
ADMIN_USER = "kubernetes-admin"


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def token_file(self) -> Path:
        return self.directory / "tokens"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(data)
    os.chmod(path, 0o600)


def _name(cn: str, org: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def ensure(directory: Path, hosts: list[str]) -> Pki:
    """Create whatever of the PKI is missing; keep what exists (restarts keep kubeconfigs valid)."""
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    if not pki.ca_cert.exists() or not pki.ca_key.exists():
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("nodeless-ca"))
            .issuer_name(_name("nodeless-ca"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(pki.ca_key, key)
        pki.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        for stale in (pki.server_cert, pki.admin_cert):
            stale.unlink(missing_ok=True)
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())

    def issue(
        cert_path: Path,
        key_path: Path,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
    ) -> None:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    wanted = sorted(
        set(
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                socket.gethostname(),
                *hosts,
            ]
        )
    )
    if not pki.server_cert.exists() or _sans(pki.server_cert) != wanted:
        sans: list[x509.GeneralName] = []
        for host in wanted:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        issue(
            pki.server_cert,
            pki.server_key,
            _name("kube-apiserver"),
            ExtendedKeyUsageOID.SERVER_AUTH,
            sans,
        )
    if not pki.admin_cert.exists():
        issue(
            pki.admin_cert,
            pki.admin_key,
            _name(ADMIN_USER, "system:masters"),
            ExtendedKeyUsageOID.CLIENT_AUTH,
            [],
        )
    if not pki.token_file.exists():
        pki.token_file.write_text(
            f"{secrets.token_urlsafe(32)},{ADMIN_USER},{ADMIN_USER},system:masters\n"
        )
        os.chmod(pki.token_file, 0o600)
    return pki


def _sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(n) for n in ext.get_values_for_type(x509.DNSName)]
    names += [str(n) for n in ext.get_values_for_type(x509.IPAddress)]
    return sorted(names)


@dataclass(frozen=True)
class TokenUser:
    name: str
    uid: str
    groups: tuple[str, ...]


def read_tokens(pki: Pki) -> dict[str, TokenUser]:
    """The static token file, in upstream's ``token,user,uid,"group1,group2"`` form."""
    tokens: dict[str, TokenUser] = {}
    for line in pki.token_file.read_text().splitlines():
        parts = [p.strip().strip('"') for p in line.split(",", 3)]
        if len(parts) >= 3 and parts[0]:
            groups = tuple(g for g in (parts[3].split(",") if len(parts) > 3 else []) if g)
            tokens[parts[0]] = TokenUser(parts[1], parts[2], groups)
    return tokens


def server_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca_cert)
    # Client certificates are one way to authenticate, bearer tokens another.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def write_kubeconfig(pki: Pki, path: Path, server: str, context_name: str = "nodeless") -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context_name,
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": ADMIN_USER,
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": context_name,
                "context": {"cluster": context_name, "user": ADMIN_USER, "namespace": "default"},
            }
        ],
        "current-context": context_name,
        "preferences": {},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
