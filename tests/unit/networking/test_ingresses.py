"""The Ingress route table: which Ingresses are ours and what a (host, path)
resolves to, table-driven from the matching rules of
https://kubernetes.io/docs/concepts/services-networking/ingress/."""

from __future__ import annotations

from typing import Any

import pytest

from nodeless.networking import ingresses, servicemaps

NS = "default"


def ingress(
    name: str,
    *rules: dict[str, Any],
    created: str = "2026-01-01T00:00:00Z",
    namespace: str = NS,
    class_name: str | None = "nodeless",
    annotations: dict[str, str] | None = None,
    default: dict[str, Any] | None = None,
    tls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "creationTimestamp": created}
    if annotations:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"rules": list(rules)}
    if class_name is not None:
        spec["ingressClassName"] = class_name
    if default is not None:
        spec["defaultBackend"] = default
    if tls is not None:
        spec["tls"] = tls
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": spec,
    }


def backend(service: str, port: int | str = 80) -> dict[str, Any]:
    key = "number" if isinstance(port, int) else "name"
    return {"service": {"name": service, "port": {key: port}}}


def rule(host: str | None, *paths: tuple[str, str, str]) -> dict[str, Any]:
    """A rule; each path is (path, pathType, service)."""
    out: dict[str, Any] = {
        "http": {
            "paths": [
                {"path": path, "pathType": kind, "backend": backend(service)}
                for path, kind, service in paths
            ]
        }
    }
    if host is not None:
        out["host"] = host
    return out


def service(name: str, *ports: tuple[str, int], namespace: str = NS) -> servicemaps.Service:
    return servicemaps.Service(
        namespace=namespace,
        name=name,
        type="ClusterIP",
        cluster_ips=("10.96.0.10",),
        ports=tuple(servicemaps.ServicePort(n, "TCP", p, p) for n, p in ports or (("http", 80),)),
    )


def lookup(*found: servicemaps.Service) -> ingresses.ServiceLookup:
    by_key = {(s.namespace, s.name): s for s in found}
    return lambda namespace, name: by_key.get((namespace, name))


def everything(namespace: str, name: str) -> servicemaps.Service:
    return service(name, namespace=namespace)


def no_secrets(namespace: str, name: str) -> None:
    return None


OURS = ingresses.ClassSelection(frozenset({"nodeless"}), default=True)


def table_of(
    *objs: dict[str, Any], classes: ingresses.ClassSelection = OURS
) -> ingresses.RouteTable:
    return ingresses.build(objs, classes, everything, no_secrets)


def target(table: ingresses.RouteTable, host: str, path: str) -> str | None:
    found = table.match(host, path)
    return None if found is None else found.backend.service


# --- paths, from the upstream examples table ----------------------------------------------

PATH_CASES = [
    # (pathType, rule path, request path, matches)
    ("Prefix", "/", "/", True),
    ("Prefix", "/", "/anything/at/all", True),
    ("Exact", "/foo", "/foo", True),
    ("Exact", "/foo", "/bar", False),
    ("Exact", "/foo", "/foo/", False),
    ("Exact", "/foo/", "/foo", False),
    ("Prefix", "/foo", "/foo", True),
    ("Prefix", "/foo", "/foo/", True),
    ("Prefix", "/foo/", "/foo", True),
    ("Prefix", "/foo/", "/foo/", True),
    ("Prefix", "/aaa/bb", "/aaa/bbb", False),
    ("Prefix", "/aaa/bbb", "/aaa/bbb", True),
    ("Prefix", "/aaa/bbb/", "/aaa/bbb", True),
    ("Prefix", "/aaa/bbb", "/aaa/bbb/", True),
    ("Prefix", "/aaa/bbb", "/aaa/bbb/ccc", True),
    ("Prefix", "/aaa/bbb", "/aaa/bbbxyz", False),
    ("Prefix", "/foo", "/foobar", False),
    ("ImplementationSpecific", "/foo", "/foo/bar", True),
    ("ImplementationSpecific", "/foo", "/foobar", False),
]


@pytest.mark.parametrize(("path_type", "path", "request_path", "matches"), PATH_CASES)
def test_path_matching_follows_the_upstream_examples(
    path_type: str, path: str, request_path: str, matches: bool
) -> None:
    table = table_of(ingress("web", rule(None, (path, path_type, "svc"))))
    assert (target(table, "any.example.com", request_path) == "svc") is matches


def test_the_longest_path_wins_and_exact_beats_prefix_at_equal_length() -> None:
    table = table_of(
        ingress(
            "web",
            rule(
                None,
                ("/", "Prefix", "root"),
                ("/aaa", "Prefix", "aaa"),
                ("/aaa/bbb", "Prefix", "bbb-prefix"),
                ("/aaa/bbb", "Exact", "bbb-exact"),
            ),
        )
    )
    cases = {
        "/": "root",
        "/zzz": "root",
        "/aaa": "aaa",
        "/aaa/ccc": "aaa",
        "/aaa/bbb": "bbb-exact",
        "/aaa/bbb/": "bbb-prefix",
        "/aaa/bbb/ccc": "bbb-prefix",
    }
    assert {path: target(table, "h", path) for path in cases} == cases


# --- hosts -----------------------------------------------------------------------------------

HOST_CASES = [
    # (request host, service)
    ("foo.bar.com", "exact"),
    ("FOO.bar.com:8080", "exact"),
    ("foo.bar.com.", "exact"),
    ("baz.bar.com", "wildcard"),
    ("bar.bar.com", "wildcard"),
    ("bar.com", "catch-all"),
    ("a.baz.bar.com", "catch-all"),
    ("other.org", "catch-all"),
    ("10.0.0.1:80", "catch-all"),
    ("[::1]:8080", "catch-all"),
]


@pytest.mark.parametrize(("host", "expected"), HOST_CASES)
def test_an_exact_host_beats_a_wildcard_which_beats_no_host(host: str, expected: str) -> None:
    table = table_of(
        ingress(
            "web",
            rule(None, ("/", "Prefix", "catch-all")),
            rule("*.bar.com", ("/", "Prefix", "wildcard")),
            rule("foo.bar.com", ("/", "Prefix", "exact")),
        )
    )
    assert target(table, host, "/") == expected


def test_a_host_whose_paths_do_not_match_falls_through_to_less_specific_rules() -> None:
    table = table_of(
        ingress(
            "web",
            rule("foo.bar.com", ("/api", "Prefix", "api")),
            rule(None, ("/", "Prefix", "catch-all")),
        )
    )
    assert target(table, "foo.bar.com", "/api/x") == "api"
    assert target(table, "foo.bar.com", "/static") == "catch-all"


def test_the_default_backend_serves_what_no_rule_matches_and_otherwise_404() -> None:
    with_default = table_of(
        ingress("web", rule("a.com", ("/", "Prefix", "a")), default=backend("fallback"))
    )
    assert target(with_default, "a.com", "/x") == "a"
    assert target(with_default, "b.com", "/x") == "fallback"
    without = table_of(ingress("web", rule("a.com", ("/", "Prefix", "a"))))
    assert without.match("b.com", "/") is None


def test_the_oldest_ingress_has_the_default_backend_and_a_conflicting_path() -> None:
    young = ingress(
        "young",
        rule("a.com", ("/", "Prefix", "young-root"), ("/only-young", "Prefix", "young-only")),
        created="2026-03-01T00:00:00Z",
        default=backend("young-default"),
    )
    old = ingress(
        "old",
        rule("a.com", ("/", "Prefix", "old-root")),
        created="2026-02-01T00:00:00Z",
        default=backend("old-default"),
    )
    table = table_of(young, old)
    assert target(table, "a.com", "/") == "old-root"
    assert target(table, "a.com", "/only-young") == "young-only"
    assert target(table, "b.com", "/") == "old-default"
    assert [p.reason for p in table.problems[(NS, "young")]] == [ingresses.PATH_CONFLICT]
    assert "default/old" in table.problems[(NS, "young")][0].message
    assert table.problems[(NS, "old")] == []


def test_same_age_ties_break_by_namespace_then_name() -> None:
    first = ingress("b", rule("a.com", ("/", "Prefix", "from-a-b")), namespace="a")
    second = ingress("a", rule("a.com", ("/", "Prefix", "from-b-a")), namespace="b")
    assert target(table_of(second, first), "a.com", "/") == "from-a-b"


def test_routes_of_several_ingresses_merge_by_precedence() -> None:
    table = table_of(
        ingress("one", rule("a.com", ("/", "Prefix", "one"))),
        ingress("two", rule("a.com", ("/api", "Prefix", "two")), created="2026-05-01T00:00:00Z"),
    )
    assert target(table, "a.com", "/api/v1") == "two"
    assert target(table, "a.com", "/web") == "one"


# --- classes -----------------------------------------------------------------------------------


CLASS_CASES = [
    # (ingressClassName, legacy annotation, our class is the default, ours)
    ("nodeless", None, False, True),
    ("nginx", None, True, False),
    (None, None, True, True),
    (None, None, False, False),
    (None, "nodeless", False, True),
    (None, "nginx", True, False),
    ("nginx", "nodeless", False, True),  # the annotation decides, as ingress-nginx
    ("mine", None, False, True),  # another IngressClass naming our controller
]


@pytest.mark.parametrize(("class_name", "annotation", "default", "ours"), CLASS_CASES)
def test_which_ingresses_are_ours(
    class_name: str | None, annotation: str | None, default: bool, ours: bool
) -> None:
    classes: list[dict[str, Any]] = [
        {
            "metadata": {
                "name": "nodeless",
                "annotations": {ingresses.DEFAULT_CLASS_ANNOTATION: "true"} if default else {},
            },
            "spec": {"controller": ingresses.CONTROLLER},
        },
        {"metadata": {"name": "mine"}, "spec": {"controller": ingresses.CONTROLLER}},
        {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}},
    ]
    selection = ingresses.select_classes(classes, "nodeless")
    obj = ingress(
        "web",
        rule(None, ("/", "Prefix", "svc")),
        class_name=class_name,
        annotations={ingresses.CLASS_ANNOTATION: annotation} if annotation else None,
    )
    table = ingresses.build([obj], selection, everything, no_secrets)
    assert (target(table, "h", "/") == "svc") is ours
    assert ((NS, "web") in table.problems) is ours


# --- problems --------------------------------------------------------------------------------


def test_backend_problems_are_reported_and_the_routes_kept() -> None:
    obj = ingress(
        "web",
        rule(
            "a.com",
            ("/missing", "Prefix", "missing"),
            ("/good", "Prefix", "good"),
        ),
        {
            "host": "a.com",
            "http": {
                "paths": [
                    {"path": "/named", "pathType": "Prefix", "backend": backend("good", "http")},
                    {"path": "/bad-port", "pathType": "Prefix", "backend": backend("good", 81)},
                    {
                        "path": "/bucket",
                        "pathType": "Prefix",
                        "backend": {"resource": {"kind": "StorageBucket", "name": "b"}},
                    },
                ]
            },
        },
    )
    table = ingresses.build([obj], OURS, lookup(service("good", ("http", 80))), no_secrets)
    reasons = sorted((p.reason, p.message) for p in table.problems[(NS, "web")])
    assert reasons == [
        ("BackendNotFound", "Service default/good has no TCP port 81"),
        ("BackendNotFound", "Service default/missing not found"),
        ("UnsupportedBackend", "resource backends (StorageBucket) are not supported"),
    ]
    assert target(table, "a.com", "/good") == "good"
    assert target(table, "a.com", "/missing") == "missing"  # 503 until it exists
    named = table.match("a.com", "/named")
    assert named is not None and named.backend.port == "http"
    assert table.match("a.com", "/bucket") is None


def test_tls_secrets_must_exist_and_be_of_type_tls() -> None:
    good = {"type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}
    opaque = {"type": "Opaque", "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}
    empty = {"type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA=="}}
    secrets = {"good": good, "opaque": opaque, "empty": empty}
    obj = ingress(
        "web",
        rule("a.com", ("/", "Prefix", "svc")),
        tls=[
            {"hosts": ["a.com"], "secretName": "good"},
            {"hosts": ["b.com"], "secretName": "opaque"},
            {"hosts": ["c.com"], "secretName": "empty"},
            {"hosts": ["d.com"], "secretName": "absent"},
        ],
    )
    table = ingresses.build([obj], OURS, everything, lambda ns, name: secrets.get(name))
    assert [p.message for p in table.problems[(NS, "web")]] == [
        "TLS Secret default/opaque is of type Opaque, not kubernetes.io/tls",
        "TLS Secret default/empty has no tls.key",
        "TLS Secret default/absent not found",
    ]
    assert {p.reason for p in table.problems[(NS, "web")]} == {"InvalidTLSSecret"}
    assert [e.secret for e in table.tls] == [(NS, "good")]


CERTIFICATE_CASES = [
    # (SNI name, secret chosen)
    ("a.example.com", "exact"),
    ("b.example.com", "wildcard"),
    ("x.y.example.com", "catch-all"),
    ("other.org", "catch-all"),
    (None, "catch-all"),
]


@pytest.mark.parametrize(("server_name", "secret"), CERTIFICATE_CASES)
def test_the_certificate_for_a_server_name(server_name: str | None, secret: str) -> None:
    good = {"type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}
    obj = ingress(
        "web",
        rule("a.example.com", ("/", "Prefix", "svc")),
        tls=[
            {"secretName": "catch-all"},
            {"hosts": ["*.example.com"], "secretName": "wildcard"},
            {"hosts": ["a.example.com"], "secretName": "exact"},
        ],
    )
    table = ingresses.build([obj], OURS, everything, lambda ns, name: good)
    assert table.certificate_for(server_name)[0].secret == (NS, secret)


def test_a_host_without_a_certificate_gets_none() -> None:
    good = {"type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}
    obj = ingress(
        "web", rule("a.com", ("/", "Prefix", "svc")), tls=[{"hosts": ["a.com"], "secretName": "s"}]
    )
    table = ingresses.build([obj], OURS, everything, lambda ns, name: good)
    assert table.certificate_for("b.com") == []
    assert table.certificate_for(None) == []
