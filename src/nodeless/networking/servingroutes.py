"""Knative Services as routes of the ingress gateway, and the weighted choice
that splits their traffic.

The Knative Service controller publishes, in each Service's status, its URL
and its traffic resolved to Revisions (only ever Ready ones). This module
turns that into gateway routes, as Knative's networking layer turns a Route
into an ingress:

- ``status.url``'s host routes every path to the traffic targets with a
  percent above zero, weighted by it (the same Revision named twice adds
  up);
- each tagged target with a ``url`` gets its own host, all of it to that
  Revision, whatever its percent (Knative's tag routes);
- a Revision is reached on port 80 of the ClusterIP Service of its own name.

An Ingress claiming the same host and path wins: it was written by hand.

The split is Nginx's smooth weighted round-robin rather than a random draw:
over every 100 requests a 90/10 split sends exactly 90 and 10, interleaved
(never ten in a row to the small one), so a canary's share is what was asked
for even at low traffic, and tests can count it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nodeless.api import knativeserving
from nodeless.client import clients
from nodeless.networking import ingresses

KNATIVE_SERVICES = clients.ResourceRef(
    knativeserving.GROUP, knativeserving.VERSION, "services", True, "Service"
)

Split = tuple[tuple[ingresses.Backend, int], ...]


def _backend(namespace: str, revision: str) -> ingresses.Backend:
    return ingresses.Backend(namespace, revision, knativeserving.SERVICE_PORT)


def routes(services: Iterable[Mapping[str, Any]]) -> list[ingresses.Route]:
    """Gateway routes for every Knative Service whose status has traffic."""
    out: list[ingresses.Route] = []
    for service in services:
        meta = service.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        key = (namespace, str(meta.get("name") or ""))
        age = (str(meta.get("creationTimestamp") or ""), *key)
        status = service.get("status") or {}
        targets = [t for t in status.get("traffic") or () if isinstance(t, Mapping)]
        weights: dict[str, int] = {}
        for target in targets:
            name = str(target.get("revisionName") or "")
            percent = target.get("percent")
            if name and isinstance(percent, int) and percent > 0:
                weights[name] = weights.get(name, 0) + percent
        host = knativeserving.url_host(str(status.get("url") or ""))
        if host and weights:
            split = tuple((_backend(namespace, name), weight) for name, weight in weights.items())
            heaviest = max(split, key=lambda item: item[1])[0]
            out.append(ingresses.Route(host, "/", "Prefix", heaviest, key, age, split))
        for target in targets:
            name = str(target.get("revisionName") or "")
            tag_host = knativeserving.url_host(str(target.get("url") or ""))
            if name and target.get("tag") and tag_host:
                out.append(
                    ingresses.Route(tag_host, "/", "Prefix", _backend(namespace, name), key, age)
                )
    return out


class WeightedPicker:
    """Smooth weighted round-robin per split, remembered across route-table
    rebuilds for as long as the split itself does not change."""

    def __init__(self) -> None:
        self._current: dict[tuple[str, Split], list[int]] = {}

    def pick(self, host: str, split: Split) -> ingresses.Backend:
        key = (host, split)
        current = self._current.get(key)
        if current is None:
            # A changed split starts afresh; forget the old one for this host.
            for old in [k for k in self._current if k[0] == host]:
                del self._current[old]
            current = self._current[key] = [0] * len(split)
        total = 0
        best = 0
        for i, (_, weight) in enumerate(split):
            current[i] += weight
            total += weight
            if current[i] > current[best]:
                best = i
        current[best] -= total
        return split[best][0]
