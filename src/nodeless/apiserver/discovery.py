"""API discovery documents: legacy (``/api``, ``/apis``, per group-version) and
aggregated v2 (kubectl prefers it; kopf and kr8s read only the legacy ones)."""

from __future__ import annotations

from typing import Any

from nodeless.api import kinds

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_SERVER_ADDRESS = [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]


def wants_aggregated(accept: str) -> bool:
    """True when the client's Accept prefers the aggregated v2 document."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if (
            "g=apidiscovery.k8s.io" in params
            and "v=v2" in params
            and "as=APIGroupDiscoveryList" in params
        ):
            return True
        if part.split(";")[0].strip() in ("application/json", "*/*", "application/*"):
            return False
    return False


def api_versions(address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(registry: kinds.Registry) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in registry.groups() if g],
    }


def api_group(registry: kinds.Registry, group: str) -> dict[str, Any] | None:
    for g, vs in registry.groups():
        if g == group:
            return dict(_group(g, vs), kind="APIGroup", apiVersion="v1")
    return None


def api_resource_list(registry: kinds.Registry, group: str, version: str) -> dict[str, Any] | None:
    resources = registry.in_group_version(group, version)
    if not resources:
        return None
    out: list[dict[str, Any]] = []
    for r in resources:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        if not r.virtual:
            entry["storageVersionHash"] = _hash(f"{r.group}/{r.version}/{r.kind}")
        out.append(entry)
        for sub in r.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{r.plural}/{sub.name}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sub.kind,
                "verbs": list(sub.verbs),
            }
            if sub.group:
                sub_entry["group"] = sub.group
                sub_entry["version"] = sub.version
            out.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": out,
    }


def _hash(text: str) -> str:
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(text.encode()).digest()[:8]).decode()


def _aggregated_resource(r: kinds.Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    if r.subresources:
        entry["subresources"] = [
            {
                "subresource": s.name,
                "responseKind": {
                    "group": s.group if s.group else r.group,
                    "version": s.version or r.version,
                    "kind": s.kind,
                },
                "verbs": list(s.verbs),
            }
            for s in r.subresources
        ]
    return entry


def aggregated(registry: kinds.Registry, legacy: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList for ``/api`` (legacy=True) or ``/apis``."""
    items = []
    for group, versions in registry.groups():
        if (group == "") != legacy:
            continue
        items.append(
            {
                "metadata": {"name": group, "creationTimestamp": None},
                "versions": [
                    {
                        "version": v,
                        "resources": [
                            _aggregated_resource(r) for r in registry.in_group_version(group, v)
                        ],
                        "freshness": "Current",
                    }
                    for v in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
