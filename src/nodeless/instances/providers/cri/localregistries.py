"""A ``docker-registry`` (Debian's distribution registry) on 127.0.0.1.

Nothing outside this machine can be pulled from, so the tests and the
benchmarks that pull real images serve them from a registry of their own:
started here on a free port with its data under a directory the caller owns,
optionally behind htpasswd basic authentication, filled with
``registrypush``, and stopped when done.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

BINARY = "docker-registry"


class RegistryError(Exception):
    """The registry could not start; the message has its log."""


@dataclass
class LocalRegistry:
    host: str  # "127.0.0.1:PORT"
    process: subprocess.Popen[bytes]

    def image(self, repository: str) -> str:
        return f"{self.host}/{repository}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def available() -> bool:
    return shutil.which(BINARY) is not None


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line (the only kind docker-registry accepts), from
    the system's crypt(3); cost 4 keeps each authenticated request cheap."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    return f"{user}:{hashed}\n"


def start(
    root: Path, *, credentials: tuple[str, str] | None = None, timeout: float = 20.0
) -> LocalRegistry:
    """A registry keeping its blobs under ``root`` (created), answering once
    this returns; with ``credentials`` (user, password) it wants them."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise RegistryError(f"{BINARY} is not installed (scripts/install-system-packages.sh)")
    root.mkdir(parents=True)
    port = _free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root / 'data'}",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: nodeless-local",
    ]
    if credentials is not None:
        (root / "htpasswd").write_text(htpasswd_line(*credentials))
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: nodeless-local",
            f"    path: {root / 'htpasswd'}",
        ]
    (root / "config.yml").write_text("\n".join(lines) + "\n")
    with (root / "registry.log").open("ab") as out:
        process = subprocess.Popen(
            [binary, "serve", str(root / "config.yml")], stdout=out, stderr=out
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                break
        except urllib.error.HTTPError as e:
            if e.code == 401:  # up, and wanting the credentials
                break
            raise
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RegistryError((root / "registry.log").read_text()) from None
            time.sleep(0.05)
    return LocalRegistry(f"127.0.0.1:{port}", process)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
