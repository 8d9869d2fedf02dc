"""Knative Services' status as gateway routes, and the smooth weighted split."""

from __future__ import annotations

import collections
from typing import Any

from nodeless.networking import ingresses, servingroutes


def ksvc(
    traffic: list[dict[str, Any]], url: str = "http://hello.default.example.com"
) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": "hello",
            "namespace": "default",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "status": {"url": url, "traffic": traffic},
    }


def backend(revision: str) -> ingresses.Backend:
    return ingresses.Backend("default", revision, 80)


def test_the_url_host_splits_between_revisions_and_tags_get_their_own_hosts() -> None:
    routes = servingroutes.routes(
        [
            ksvc(
                [
                    {"revisionName": "hello-00001", "percent": 90},
                    {
                        "revisionName": "hello-00002",
                        "percent": 10,
                        "tag": "canary",
                        "url": "http://canary-hello.default.example.com",
                    },
                    {
                        "revisionName": "hello-00003",
                        "percent": 0,
                        "tag": "next",
                        "url": "http://next-hello.default.example.com",
                    },
                ]
            )
        ]
    )
    by_host = {r.host: r for r in routes}
    assert set(by_host) == {
        "hello.default.example.com",
        "canary-hello.default.example.com",
        "next-hello.default.example.com",
    }
    main = by_host["hello.default.example.com"]
    assert main.split == ((backend("hello-00001"), 90), (backend("hello-00002"), 10))
    assert main.backend == backend("hello-00001")
    assert by_host["next-hello.default.example.com"].backend == backend("hello-00003")
    assert by_host["next-hello.default.example.com"].split == ()


def test_a_revision_named_twice_adds_up_and_a_service_without_traffic_has_no_route() -> None:
    routes = servingroutes.routes(
        [
            ksvc(
                [
                    {"revisionName": "hello-00001", "latestRevision": True, "percent": 50},
                    {"revisionName": "hello-00001", "percent": 50},
                ]
            ),
            {"metadata": {"name": "new", "namespace": "default"}, "status": {}},
        ]
    )
    assert [(r.host, r.split) for r in routes] == [
        ("hello.default.example.com", ((backend("hello-00001"), 100),))
    ]


def test_an_ingress_claiming_the_same_host_wins() -> None:
    ingress = {
        "metadata": {
            "name": "web",
            "namespace": "default",
            "creationTimestamp": "2026-02-01T00:00:00Z",
        },
        "spec": {
            "ingressClassName": "nodeless",
            "rules": [
                {
                    "host": "hello.default.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "manual", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }
    extra = servingroutes.routes([ksvc([{"revisionName": "hello-00001", "percent": 100}])])
    table = ingresses.build(
        [ingress], ingresses.ClassSelection(), lambda _n, _s: None, lambda _n, _s: None, extra=extra
    )
    match = table.match("hello.default.example.com", "/")
    assert match is not None and match.backend.service == "manual"
    alone = ingresses.build(
        [], ingresses.ClassSelection(), lambda _n, _s: None, lambda _n, _s: None, extra=extra
    )
    match = alone.match("Hello.Default.Example.com:8080", "/any/path")
    assert match is not None and match.backend == backend("hello-00001")


def test_a_90_10_split_is_exact_over_every_hundred_and_interleaved() -> None:
    picker = servingroutes.WeightedPicker()
    split = ((backend("a"), 90), (backend("b"), 10))
    picks = [picker.pick("h", split).service for _ in range(100)]
    assert collections.Counter(picks) == {"a": 90, "b": 10}
    # Never two of the small share in a row, and the large one never waits long.
    assert "bb" not in "".join(picks)
    assert max(len(run) for run in "".join(picks).split("b")) <= 9


def test_a_changed_split_starts_afresh() -> None:
    picker = servingroutes.WeightedPicker()
    first = ((backend("a"), 50), (backend("b"), 50))
    picker.pick("h", first)
    second = ((backend("a"), 20), (backend("c"), 80))
    picks = collections.Counter(picker.pick("h", second).service for _ in range(10))
    assert picks == {"a": 2, "c": 8}
