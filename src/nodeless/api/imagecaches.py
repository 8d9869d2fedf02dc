"""ImageCache: images pulled ahead of the pods that need them.

Served as ``nodeless.dev/v1`` (built in) and as ECI's
``eci.alibabacloud.com/v1`` (a CRD), both cluster-scoped::

    spec:
      images: [registry.local/app:1.2, busybox:1.36]
      imagePullSecrets: [default:regcred]     # namespace:secret
      retentionDays: 7                       # default: kept until deleted

Status: ``phase`` (Pending, Creating, Ready, Failed, Expired), ``progress``
(``pulled/total``), ``startTime``, ``lastUpdatedTime``, ``expireDateTime``,
``images`` (what was pulled, with the reference the runtime resolved).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Final

import yaml

from nodeless.api import errors

GROUPS: Final = {"nodeless.dev": "v1", "eci.alibabacloud.com": "v1"}
KIND: Final = "ImageCache"
PENDING, CREATING, READY, FAILED, EXPIRED = "Pending", "Creating", "Ready", "Failed", "Expired"

Obj = dict[str, Any]


@cache
def _crd_documents() -> tuple[str, ...]:
    text = Path(__file__).with_name("image-caches.yaml").read_text()
    return tuple(json.dumps(doc) for doc in yaml.safe_load_all(text) if doc)


def crds() -> list[Obj]:
    return [json.loads(doc) for doc in _crd_documents()]


def images(obj: Mapping[str, Any]) -> list[str]:
    return [str(i) for i in (obj.get("spec") or {}).get("images") or () if isinstance(i, str)]


def pull_secrets(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(namespace, name) of each ``namespace:secret`` entry."""
    out = []
    for entry in (obj.get("spec") or {}).get("imagePullSecrets") or ():
        namespace, _, name = str(entry).partition(":")
        if namespace and name:
            out.append((namespace, name))
    return out


def expires_at(obj: Mapping[str, Any], created: datetime.datetime) -> datetime.datetime | None:
    days = (obj.get("spec") or {}).get("retentionDays")
    if not isinstance(days, int) or isinstance(days, bool) or days <= 0:
        return None
    return created + datetime.timedelta(days=days)


def problems(
    obj: Mapping[str, Any], valid_reference: Callable[[str], str | None]
) -> list[errors.Cause]:
    """The checks at creation and update; ``valid_reference`` says why an
    image reference is invalid (None when it is fine)."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return [errors.Cause("FieldValueRequired", "Required value", "spec")]
    causes: list[errors.Cause] = []
    listed = spec.get("images")
    if not isinstance(listed, list) or not listed:
        causes.append(
            errors.Cause("FieldValueRequired", "Required value: at least one image", "spec.images")
        )
    else:
        for i, image in enumerate(listed):
            why = valid_reference(image) if isinstance(image, str) else "must be a string"
            if why:
                causes.append(
                    errors.Cause(
                        "FieldValueInvalid", f"Invalid value: {image!r}: {why}", f"spec.images[{i}]"
                    )
                )
    for i, entry in enumerate(spec.get("imagePullSecrets") or ()):
        namespace, colon, name = str(entry).partition(":")
        if not (isinstance(entry, str) and colon and namespace and name):
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {entry!r}: must be namespace:secret",
                    f"spec.imagePullSecrets[{i}]",
                )
            )
    days = spec.get("retentionDays")
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days <= 0):
        causes.append(
            errors.Cause(
                "FieldValueInvalid",
                f"Invalid value: {days!r}: must be a positive number of days",
                "spec.retentionDays",
            )
        )
    return causes


def match(
    caches: Iterable[Mapping[str, Any]],
    wanted: Iterable[str],
    normalize: Callable[[str], str],
    name: str | None = None,
) -> str | None:
    """The Ready cache holding every one of ``wanted`` (the named one, or
    the first by name for ``auto``), or None."""
    need = {normalize(i) for i in wanted}
    for obj in sorted(caches, key=lambda o: str((o.get("metadata") or {}).get("name") or "")):
        cache_name = str((obj.get("metadata") or {}).get("name") or "")
        if name is not None and cache_name != name:
            continue
        if (obj.get("status") or {}).get("phase") != READY:
            continue
        if need <= {normalize(i) for i in images(obj)}:
            return cache_name
    return None
