"""Ingress objects as a route table: which backend serves a (host, path).

This module is pure (no I/O) so the matching rules, which users rely on
exactly as https://kubernetes.io/docs/concepts/services-networking/ingress/
states them, are tested table-driven; the gateway rebuilds a table whenever
an Ingress, Service, Secret or IngressClass changes and only reads it per
request.

Which Ingresses are ours: the legacy ``kubernetes.io/ingress.class``
annotation decides when present (as ingress-nginx), else
``spec.ingressClassName`` must name one of our IngressClasses (the class named
after the gateway, or any IngressClass whose ``spec.controller`` is ours),
else an Ingress without a class is ours when one of our IngressClasses is the
cluster default.

Matching, across every Ingress of ours merged:

- hosts: an exact host beats a wildcard (``*.example.com`` matches exactly one
  more leading label) which beats rules without a host (any host); when no
  path of a more specific host matches, the less specific ones are tried
  (ALB's rule list, Gateway API's precedence), then the default backend;
- paths: ``Exact`` matches the path as is; ``Prefix`` (and
  ``ImplementationSpecific``, which we treat as Prefix) matches element-wise,
  so ``/foo`` matches ``/foo`` and ``/foo/bar`` but not ``/foobar``, and a
  trailing slash is ignored; the longest rule path wins, Exact before Prefix
  at equal length;
- ties and duplicates: the oldest Ingress (creationTimestamp, then
  namespace/name, as ingress-nginx) wins; a younger Ingress claiming the same
  host, path and type gets a ``PathConflict`` problem for it while its other
  paths keep being served;
- the default backend is the oldest Ingress's ``spec.defaultBackend``.

Problems (missing Service or port, unsupported ``resource`` backends, TLS
Secrets that are missing or not ``kubernetes.io/tls``, path conflicts) are
collected per Ingress for the gateway to report as Warning Events; a route to
a missing Service stays in the table (its requests get 503, as ingress-nginx)
so that creating the Service later needs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nodeless.networking import servicemaps

CONTROLLER = "nodeless.dev/ingress-gateway"
DEFAULT_CLASS = "nodeless"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
TLS_SECRET_TYPE = "kubernetes.io/tls"

# Problem reasons, used as Event reasons.
BACKEND_NOT_FOUND = "BackendNotFound"
UNSUPPORTED_BACKEND = "UnsupportedBackend"
INVALID_TLS_SECRET = "InvalidTLSSecret"
PATH_CONFLICT = "PathConflict"

Key = tuple[str, str]  # (namespace, name)
PathType = Literal["Exact", "Prefix"]
ServiceLookup = Callable[[str, str], servicemaps.Service | None]
SecretLookup = Callable[[str, str], Mapping[str, Any] | None]

# Host classes, most specific first.
_EXACT, _WILDCARD, _ANY = 0, 1, 2


@dataclass(frozen=True)
class Backend:
    """A Service port: ``port`` is the Service port's number or its name."""

    namespace: str
    service: str
    port: int | str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port}"


@dataclass(frozen=True)
class Problem:
    """Something wrong with one Ingress, worth a Warning Event while it lasts."""

    ingress: Key
    reason: str
    message: str


@dataclass(frozen=True)
class Route:
    host: str  # "" for any host; "*.example.com" for a wildcard
    path: str  # normalised: Prefix paths without a trailing slash ("/" stays)
    path_type: PathType
    backend: Backend
    ingress: Key
    # Sort key of the Ingress: older first.
    age: tuple[str, str, str] = ("", "", "")
    # Weighted backends (a Knative traffic split); ``backend`` is then the heaviest.
    split: tuple[tuple[Backend, int], ...] = ()

    @property
    def segments(self) -> tuple[str, ...]:
        return _segments(self.path)

    def matches_path(self, path: str) -> bool:
        if self.path_type == "Exact":
            return path == self.path
        wanted = self.segments
        return _segments(path)[: len(wanted)] == wanted


@dataclass(frozen=True)
class Match:
    """What a request resolved to: the route (None for a default backend),
    its backend and the Ingress that provided it."""

    backend: Backend
    ingress: Key
    route: Route | None = None


@dataclass(frozen=True)
class TlsEntry:
    """One ``spec.tls`` item of an Ingress of ours whose Secret looks usable."""

    hosts: tuple[str, ...]  # empty: any host (the Ingress's default certificate)
    secret: Key
    ingress: Key
    age: tuple[str, str, str] = ("", "", "")


@dataclass(frozen=True)
class ClassSelection:
    """Which IngressClass names are ours, and whether one of them is the default."""

    names: frozenset[str] = frozenset({DEFAULT_CLASS})
    default: bool = False


@dataclass
class RouteTable:
    """Routes indexed by host class; read-only once built."""

    exact: dict[str, list[Route]] = field(default_factory=dict)
    wildcard: dict[str, list[Route]] = field(default_factory=dict)  # by parent domain
    any_host: list[Route] = field(default_factory=list)
    default: Match | None = None
    tls: list[TlsEntry] = field(default_factory=list)
    # Every Ingress of ours, with its problems (an empty list when it has none).
    problems: dict[Key, list[Problem]] = field(default_factory=dict)

    @property
    def ingresses(self) -> list[Key]:
        return sorted(self.problems)

    def routes(self) -> list[Route]:
        out: list[Route] = []
        for by_host in (self.exact, self.wildcard):
            for routes in by_host.values():
                out.extend(routes)
        out.extend(self.any_host)
        return out

    def match(self, host: str, path: str) -> Match | None:
        """The backend for a request, or None (404). ``host`` may carry a port
        and any case; ``path`` is the decoded path without the query."""
        host = normalise_host(host)
        path = path or "/"
        candidates = [self.exact.get(host)]
        _, dot, parent = host.partition(".")
        if dot and parent:
            candidates.append(self.wildcard.get(parent))
        candidates.append(self.any_host)
        for routes in candidates:
            for route in routes or ():
                if route.matches_path(path):
                    return Match(route.backend, route.ingress, route)
        return self.default

    def certificate_for(self, server_name: str | None) -> list[TlsEntry]:
        """TLS entries whose hosts cover ``server_name``, best first: exact
        host, then wildcard, then entries without hosts; older Ingress first
        within each. The caller takes the first whose certificate loads."""
        name = normalise_host(server_name or "")
        ranked: list[tuple[int, tuple[str, str, str], TlsEntry]] = []
        for entry in self.tls:
            if not entry.hosts:
                ranked.append((_ANY, entry.age, entry))
                continue
            if not name:
                continue
            best = None
            for host in entry.hosts:
                if host == name:
                    best = _EXACT
                    break
                if host_matches(host, name):
                    best = _WILDCARD
            if best is not None:
                ranked.append((best, entry.age, entry))
        ranked.sort(key=lambda item: (item[0], item[1]))
        return [entry for _, _, entry in ranked]


# --- hosts and paths -------------------------------------------------------------------


def normalise_host(host: str) -> str:
    """Lower case, without a port or a trailing dot (``Foo.COM.:8080`` → ``foo.com``)."""
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal, maybe with a port
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def host_matches(pattern: str, host: str) -> bool:
    """Ingress host semantics: exact, or ``*.parent`` matching one more label."""
    if pattern.startswith("*."):
        label, dot, parent = host.partition(".")
        return bool(label) and bool(dot) and parent == pattern[2:]
    return pattern == host


def _segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


def normalise_path(path: str, path_type: PathType) -> str:
    if not path.startswith("/"):
        path = "/" + path
    if path_type == "Prefix":
        return "/" + "/".join(_segments(path))
    return path


def _precedence(route: Route) -> tuple[int, int, tuple[str, str, str]]:
    # Longest path first; Exact before Prefix at equal length; then the oldest Ingress.
    return (-len(route.path), 0 if route.path_type == "Exact" else 1, route.age)


# --- which Ingresses are ours ------------------------------------------------------------


def select_classes(
    ingress_classes: Iterable[Mapping[str, Any]],
    class_name: str = DEFAULT_CLASS,
    controller: str = CONTROLLER,
) -> ClassSelection:
    """Our class names (``class_name`` always, plus every IngressClass naming
    our controller) and whether one of ours is annotated the default."""
    names = {class_name}
    default = False
    for obj in ingress_classes:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        ours = name == class_name or (obj.get("spec") or {}).get("controller") == controller
        if not ours:
            continue
        names.add(name)
        if (meta.get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
            default = True
    return ClassSelection(frozenset(names), default)


def is_ours(ingress: Mapping[str, Any], classes: ClassSelection) -> bool:
    annotations = (ingress.get("metadata") or {}).get("annotations") or {}
    legacy = annotations.get(CLASS_ANNOTATION)
    if legacy:
        return legacy in classes.names
    class_name = (ingress.get("spec") or {}).get("ingressClassName")
    if class_name:
        return class_name in classes.names
    return classes.default


def ingress_key(ingress: Mapping[str, Any]) -> Key:
    meta = ingress.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))


def _age(ingress: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = ingress.get("metadata") or {}
    namespace, name = ingress_key(ingress)
    # RFC 3339 timestamps in one format sort as strings.
    return (str(meta.get("creationTimestamp") or ""), namespace, name)


# --- building --------------------------------------------------------------------------


def parse_backend(namespace: str, spec: Mapping[str, Any] | None) -> tuple[Backend | None, str]:
    """The Service backend, or None and why it cannot be served."""
    spec = spec or {}
    if spec.get("resource"):
        resource = spec["resource"]
        kind = resource.get("kind", "") if isinstance(resource, Mapping) else ""
        return None, f"resource backends ({kind or 'unknown kind'}) are not supported"
    service = spec.get("service") or {}
    name = str(service.get("name") or "")
    port = service.get("port") or {}
    number = port.get("number")
    port_name = port.get("name")
    if not name:
        return None, "backend names no Service"
    if isinstance(number, int) and not isinstance(number, bool) and number > 0:
        return Backend(namespace, name, number), ""
    if isinstance(port_name, str) and port_name:
        return Backend(namespace, name, port_name), ""
    return None, f"backend Service {name} names no port"


def resolve_port(service: servicemaps.Service, port: int | str) -> servicemaps.ServicePort | None:
    """The Service port an Ingress backend means: by number, or by name."""
    for candidate in service.ports:
        if isinstance(port, int) and candidate.port == port and candidate.protocol == "TCP":
            return candidate
        if isinstance(port, str) and candidate.name == port and candidate.protocol == "TCP":
            return candidate
    return None


def _backend_problem(backend: Backend, services: ServiceLookup) -> str:
    service = services(backend.namespace, backend.service)
    if service is None:
        return f"Service {backend.namespace}/{backend.service} not found"
    if resolve_port(service, backend.port) is None:
        return f"Service {backend.namespace}/{backend.service} has no TCP port {backend.port}"
    return ""


def _tls_problem(secret: Mapping[str, Any] | None, namespace: str, name: str) -> str:
    if secret is None:
        return f"TLS Secret {namespace}/{name} not found"
    secret_type = secret.get("type") or "Opaque"
    if secret_type != TLS_SECRET_TYPE:
        return f"TLS Secret {namespace}/{name} is of type {secret_type}, not {TLS_SECRET_TYPE}"
    data = secret.get("data") or {}
    missing = [k for k in ("tls.crt", "tls.key") if not data.get(k)]
    if missing:
        return f"TLS Secret {namespace}/{name} has no {' or '.join(missing)}"
    return ""


def build(
    ingresses: Iterable[Mapping[str, Any]],
    classes: ClassSelection,
    services: ServiceLookup,
    secrets: SecretLookup,
    extra: Iterable[Route] = (),
) -> RouteTable:
    """The route table of every Ingress of ours, oldest Ingress first, then
    the ``extra`` routes (Knative Services') on hosts and paths no Ingress claims."""
    table = RouteTable()
    claimed: dict[tuple[str, str, PathType], Key] = {}
    for ingress in sorted((i for i in ingresses if is_ours(i, classes)), key=_age):
        _add(table, claimed, ingress, services, secrets)
    for route in extra:
        if (route.host, route.path, route.path_type) in claimed:
            continue
        claimed[(route.host, route.path, route.path_type)] = route.ingress
        _place(table, route)
    for by_host in (table.exact, table.wildcard):
        for routes in by_host.values():
            routes.sort(key=_precedence)
    table.any_host.sort(key=_precedence)
    return table


def _place(table: RouteTable, route: Route) -> None:
    if not route.host:
        table.any_host.append(route)
    elif route.host.startswith("*."):
        table.wildcard.setdefault(route.host[2:], []).append(route)
    else:
        table.exact.setdefault(route.host, []).append(route)


def _add(
    table: RouteTable,
    claimed: dict[tuple[str, str, PathType], Key],
    ingress: Mapping[str, Any],
    services: ServiceLookup,
    secrets: SecretLookup,
) -> None:
    key = ingress_key(ingress)
    namespace = key[0]
    age = _age(ingress)
    spec = ingress.get("spec") or {}
    problems = table.problems.setdefault(key, [])

    def problem(reason: str, message: str) -> None:
        found = Problem(key, reason, message)
        if found not in problems:
            problems.append(found)

    def usable(backend_spec: Mapping[str, Any] | None) -> Backend | None:
        backend, why = parse_backend(namespace, backend_spec)
        if backend is None:
            problem(UNSUPPORTED_BACKEND, why)
            return None
        why = _backend_problem(backend, services)
        if why:
            problem(BACKEND_NOT_FOUND, why)
        return backend

    if spec.get("defaultBackend"):
        backend = usable(spec["defaultBackend"])
        if backend is not None and table.default is None:
            table.default = Match(backend, key)
    for rule in spec.get("rules") or ():
        host = normalise_host(str(rule.get("host") or ""))
        for item in (rule.get("http") or {}).get("paths") or ():
            path_type: PathType = "Exact" if item.get("pathType") == "Exact" else "Prefix"
            path = normalise_path(str(item.get("path") or "/"), path_type)
            backend = usable(item.get("backend"))
            if backend is None:
                continue
            owner = claimed.get((host, path, path_type))
            if owner is not None:
                if owner != key:
                    problem(
                        PATH_CONFLICT,
                        f"{path_type} path {host or '*'}{path} is already served by "
                        f"Ingress {owner[0]}/{owner[1]}",
                    )
                continue
            claimed[(host, path, path_type)] = key
            _place(table, Route(host, path, path_type, backend, key, age))
    for item in spec.get("tls") or ():
        secret_name = str(item.get("secretName") or "")
        if not secret_name:
            # No Secret: upstream serves these hosts with the default certificate.
            continue
        why = _tls_problem(secrets(namespace, secret_name), namespace, secret_name)
        if why:
            problem(INVALID_TLS_SECRET, why)
            continue
        hosts = tuple(normalise_host(str(h)) for h in item.get("hosts") or () if h)
        table.tls.append(TlsEntry(hosts, (namespace, secret_name), key, age))
