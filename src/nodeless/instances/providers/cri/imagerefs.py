"""Image references read as Docker and containerd read them, and pull policies.

A pod names ``busybox`` and means ``docker.io/library/busybox:latest``; its
pull secret names ``https://index.docker.io/v1/`` and means the same registry.
Pull policy defaults, registry credentials and ``InvalidImageName`` all
depend on reading a reference exactly like ``distribution/reference``'s
``ParseNormalizedNamed`` does, so that is done once, here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPOSITORY = "library"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

PULL_ALWAYS = "Always"
PULL_IF_NOT_PRESENT = "IfNotPresent"
PULL_NEVER = "Never"
PULL_POLICIES = (PULL_ALWAYS, PULL_IF_NOT_PRESENT, PULL_NEVER)

# distribution/reference's grammar.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
_DOMAIN_RE = re.compile(_DOMAIN)
_PATH_RE = re.compile(_PATH)
_TAG_RE = re.compile(_TAG)
_DIGEST_RE = re.compile(_DIGEST)


class InvalidImageName(ValueError):
    """Not an image reference; the pod's container waits with ``InvalidImageName``."""


@dataclass(frozen=True)
class ImageRef:
    """A fully qualified reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


def parse(reference: str) -> ImageRef:
    """Reads ``reference`` like the container runtimes do: the default domain
    (docker.io) and ``library/`` for official images, ``latest`` when neither
    tag nor digest is given. Raises ``InvalidImageName``."""
    if not reference or reference != reference.strip():
        raise InvalidImageName(f'invalid reference format: "{reference}"')
    remainder, _, digest = reference.partition("@")
    if digest and not _DIGEST_RE.fullmatch(digest):
        raise InvalidImageName(f'invalid reference format: "{reference}" (bad digest)')
    # a tag is after the last colon, unless that colon belongs to a domain's port
    tag = ""
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidImageName(f'invalid reference format: "{reference}" (bad tag)')
    domain, path = _split_domain(remainder)
    if not _DOMAIN_RE.fullmatch(domain):
        raise InvalidImageName(f'invalid reference format: "{reference}" (bad registry)')
    if not _PATH_RE.fullmatch(path):
        if path.lower() != path and _PATH_RE.fullmatch(path.lower()):
            raise InvalidImageName(
                f'invalid reference format: repository name "{path}" must be lowercase'
            )
        raise InvalidImageName(f'invalid reference format: "{reference}"')
    if len(f"{domain}/{path}") > NAME_TOTAL_LENGTH_MAX:
        raise InvalidImageName(
            f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    if not tag and not digest:
        tag = DEFAULT_TAG
    return ImageRef(domain, path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    """``ParseNormalizedNamed``'s rule: the first component is a registry when
    it looks like a host (a dot, a port, ``localhost`` or upper case)."""
    first, slash, rest = name.partition("/")
    if not slash or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"{OFFICIAL_REPOSITORY}/{path}"
    return domain, path


def normalize(reference: str) -> str:
    """The fully qualified spelling: ``busybox`` → ``docker.io/library/busybox:latest``."""
    return str(parse(reference))


def default_pull_policy(reference: str) -> str:
    """The apiserver's default: ``Always`` for ``:latest`` or no tag (unless
    pinned by digest), ``IfNotPresent`` otherwise."""
    remainder, at, _ = reference.partition("@")
    if at:
        return PULL_IF_NOT_PRESENT
    last = remainder.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    return PULL_ALWAYS if tag in ("", DEFAULT_TAG) else PULL_IF_NOT_PRESENT


def pull_policy(container: dict[str, object]) -> str:
    """The container's ``imagePullPolicy``, defaulted as the apiserver does."""
    policy = container.get("imagePullPolicy")
    if isinstance(policy, str) and policy in PULL_POLICIES:
        return policy
    return default_pull_policy(str(container.get("image") or ""))
