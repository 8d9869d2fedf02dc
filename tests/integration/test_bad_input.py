"""Every bad request gets the upstream Status (code, reason, JSON) and changes nothing.

Plain HTTPS from the standard library against the session cluster, with the
kubeconfig's CA and client certificate. For each rejected request the store
revision (``metadata.resourceVersion`` of ``GET /api/v1/namespaces?limit=1``)
is read before and after and must not move.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

pytestmark = pytest.mark.integration

JSON_CT = "application/json"
CRD_GROUP = "badinput.example.com"
CRD_PLURAL = "blobs"


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def warnings(self) -> list[str]:
        return list(self.headers.get_all("Warning") or [])

    def json(self) -> Any:
        return json.loads(self.body)


class Https:
    """Requests to the cluster as the kubeconfig's user (or as nobody)."""

    def __init__(self, kubeconfig: Path, scratch: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        url = urlparse(cluster["server"])
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 443
        ca = scratch / "ca.crt"
        cert = scratch / "client.crt"
        key = scratch / "client.key"
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        key.chmod(0o600)
        self.anonymous = ssl.create_default_context(cafile=str(ca))
        self.admin = ssl.create_default_context(cafile=str(ca))
        self.admin.load_cert_chain(str(cert), str(key))

    def connect(
        self, authenticated: bool = True, timeout: float = 15
    ) -> http.client.HTTPSConnection:
        context = self.admin if authenticated else self.anonymous
        return http.client.HTTPSConnection(self.host, self.port, context=context, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = JSON_CT,
        headers: dict[str, str] | None = None,
        authenticated: bool = True,
        timeout: float = 15,
    ) -> Reply:
        conn = self.connect(authenticated, timeout)
        try:
            sent_headers = {"Accept": JSON_CT, **(headers or {})}
            data: bytes | None = None
            if body is not None:
                if isinstance(body, bytes):
                    data = body
                elif isinstance(body, str):
                    data = body.encode()
                else:
                    data = json.dumps(body).encode()
                sent_headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=sent_headers)
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def revision(self) -> str:
        reply = self.request("GET", "/api/v1/namespaces?limit=1")
        assert reply.status == 200, reply.body
        rv: str = reply.json()["metadata"]["resourceVersion"]
        assert rv
        return rv

    def watch_lines(
        self, path: str, until: Any = None, timeout: float = 15
    ) -> tuple[int, str | None, list[dict[str, Any]]]:
        """Open a watch and read events until ``until(event)`` is true or the server closes it."""
        conn = self.connect(timeout=timeout)
        events: list[dict[str, Any]] = []
        try:
            conn.request("GET", path, headers={"Accept": JSON_CT})
            response = conn.getresponse()
            if response.status != 200:
                return (
                    response.status,
                    response.getheader("Content-Type"),
                    [json.loads(response.read())],
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = response.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                events.append(event)
                if until is not None and until(event):
                    break
            return response.status, response.getheader("Content-Type"), events
        finally:
            conn.close()


@pytest.fixture(scope="module")
def https(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Https:
    return Https(cluster.kubeconfig, tmp_path_factory.mktemp("https"))


def rejected(
    https: Https,
    method: str,
    path: str,
    body: Any = None,
    *,
    code: int,
    reason: str,
    content_type: str = JSON_CT,
    authenticated: bool = True,
    message: str | None = None,
) -> dict[str, Any]:
    """Send a request that must fail with a Status and must not write anything."""
    before = https.revision()
    reply = https.request(method, path, body, content_type, authenticated=authenticated)
    after = https.revision()
    detail = f"{method} {path} -> {reply.status} {reply.content_type}: {reply.body[:600]!r}"
    assert reply.status == code, detail
    assert reply.content_type == JSON_CT, detail
    status = reply.json()
    assert status["kind"] == "Status", detail
    assert status["apiVersion"] == "v1", detail
    assert status["status"] == "Failure", detail
    assert status["code"] == code, detail
    assert status["reason"] == reason, detail
    if message is not None:
        assert message in status["message"], detail
    assert before == after, f"store revision moved from {before} to {after}: {detail}"
    return dict(status)


def configmap(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **extra}


def deployment(name: str, spec_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
            },
            **(spec_extra or {}),
        },
    }


def cms(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


def deploys(namespace: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments"


def assert_absent(https: Https, path: str) -> None:
    reply = https.request("GET", path)
    assert reply.status == 404, reply.body[:300]


@pytest.fixture(scope="module")
def blob_crd(cluster: Any, https: Https) -> str:
    """A CRD for the custom-resource cases; returns its namespaced URL template."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{CRD_PLURAL}.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": CRD_PLURAL, "singular": "blob", "kind": "Blob"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer"},
                                        "payload": {"type": "string"},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    cluster.kubectl(
        "wait", "--for=condition=established", f"crd/{CRD_PLURAL}.{CRD_GROUP}", "--timeout=30s"
    )
    return f"/apis/{CRD_GROUP}/v1/namespaces/{{namespace}}/{CRD_PLURAL}"


# --- decoding -----------------------------------------------------------------


def test_bad_malformed_json(https: Https, namespace: str) -> None:
    rejected(
        https,
        "POST",
        cms(namespace),
        b'{"apiVersion": "v1", "kind": ',
        code=400,
        reason="BadRequest",
    )


def test_bad_malformed_yaml(https: Https, namespace: str) -> None:
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: [name: x\n  bad: : :\n"
    rejected(
        https,
        "POST",
        cms(namespace),
        body,
        code=400,
        reason="BadRequest",
        content_type="application/yaml",
    )


def test_bad_body_not_an_object(https: Https, namespace: str) -> None:
    rejected(https, "POST", cms(namespace), b"[1, 2, 3]", code=400, reason="BadRequest")


# --- field validation -----------------------------------------------------------


def test_bad_unknown_field_strict(https: Https, namespace: str) -> None:
    body = deployment("strict", {"bogus": True})
    rejected(
        https,
        "POST",
        deploys(namespace) + "?fieldValidation=Strict",
        body,
        code=400,
        reason="BadRequest",
        message='unknown field "spec.bogus"',
    )
    assert_absent(https, deploys(namespace) + "/strict")


def test_bad_duplicate_field_strict(https: Https, namespace: str) -> None:
    body = json.dumps(deployment("dupe")).replace('"replicas": 1', '"replicas": 1, "replicas": 2')
    assert body.count('"replicas"') == 2
    rejected(
        https,
        "POST",
        deploys(namespace) + "?fieldValidation=Strict",
        body,
        code=400,
        reason="BadRequest",
        message='duplicate field "spec.replicas"',
    )
    assert_absent(https, deploys(namespace) + "/dupe")


def test_bad_unknown_field_warn(https: Https, namespace: str) -> None:
    """Warn: created (201), one Warning header naming the field, the field dropped."""
    body = deployment("warned", {"bogus": True})
    reply = https.request("POST", deploys(namespace) + "?fieldValidation=Warn", body)
    assert reply.status == 201, reply.body[:500]
    assert reply.content_type == JSON_CT
    assert any('unknown field \\"spec.bogus\\"' in w for w in reply.warnings), reply.warnings
    assert all(w.startswith('299 - "') for w in reply.warnings), reply.warnings
    created = reply.json()
    assert "bogus" not in created["spec"], "an unknown field of a built-in kind must not be stored"
    stored = https.request("GET", deploys(namespace) + "/warned").json()
    assert "bogus" not in stored["spec"], "an unknown field of a built-in kind must not be stored"


def test_bad_invalid_field_validation_value(https: Https, namespace: str) -> None:
    """Upstream validates CreateOptions: 422 Invalid, kind CreateOptions, field fieldValidation."""
    status = rejected(
        https,
        "POST",
        cms(namespace) + "?fieldValidation=Sometimes",
        configmap("fv"),
        code=422,
        reason="Invalid",
    )
    assert status["details"]["kind"] == "CreateOptions"
    assert [c.get("field") for c in status["details"]["causes"]] == ["fieldValidation"]


# --- object validation ------------------------------------------------------------


def test_bad_invalid_name(https: Https, namespace: str) -> None:
    status = rejected(
        https, "POST", cms(namespace), configmap("Bad_Name"), code=422, reason="Invalid"
    )
    details = status["details"]
    assert details["name"] == "Bad_Name"
    assert details["kind"] == "ConfigMap"
    fields = [cause.get("field") for cause in details["causes"]]
    assert "metadata.name" in fields, details


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("apps/v1", "Deployment"), ("v1", "Secret"), ("v2", "ConfigMap")],
    ids=["other-group", "other-kind", "other-version"],
)
def test_bad_kind_mismatch(https: Https, namespace: str, api_version: str, kind: str) -> None:
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "mismatch"}}
    rejected(https, "POST", cms(namespace), body, code=400, reason="BadRequest")
    assert_absent(https, cms(namespace) + "/mismatch")


def test_bad_namespace_mismatch(https: Https, namespace: str) -> None:
    body = configmap("elsewhere")
    body["metadata"]["namespace"] = "kube-system"
    rejected(
        https,
        "POST",
        cms(namespace),
        body,
        code=400,
        reason="BadRequest",
        message="does not match the namespace",
    )
    assert_absent(https, "/api/v1/namespaces/kube-system/configmaps/elsewhere")


def test_bad_name_mismatch_on_put(https: Https, namespace: str) -> None:
    assert https.request("POST", cms(namespace), configmap("real")).status == 201
    body = configmap("other")
    rejected(https, "PUT", cms(namespace) + "/real", body, code=400, reason="BadRequest")


# --- sizes --------------------------------------------------------------------------


def test_bad_object_over_1_5_mib(https: Https, namespace: str) -> None:
    """A 1.6 MiB ConfigMap is refused as a whole.

    Upstream refuses it either for the ConfigMap data limit (1 MiB, 422) or for
    the storage object limit (1.5 MiB, 413); both are fine, a partial read is not.
    """
    body = configmap("huge", data={"blob": "x" * (1600 * 1024)})
    before = https.revision()
    reply = https.request("POST", cms(namespace), body, timeout=30)
    assert https.revision() == before
    assert reply.content_type == JSON_CT
    status = reply.json()
    assert (reply.status, status.get("reason")) in {
        (413, "RequestEntityTooLarge"),
        (422, "Invalid"),
    }, reply.body[:500]
    assert_absent(https, cms(namespace) + "/huge")


def test_bad_custom_object_over_1_5_mib(https: Https, namespace: str, blob_crd: str) -> None:
    """No schema limit applies to a custom resource: the storage limit answers 413."""
    path = blob_crd.format(namespace=namespace)
    body = {
        "apiVersion": f"{CRD_GROUP}/v1",
        "kind": "Blob",
        "metadata": {"name": "huge"},
        "spec": {"payload": "x" * (1600 * 1024)},
    }
    rejected(https, "POST", path, body, code=413, reason="RequestEntityTooLarge")
    assert_absent(https, path + "/huge")


def test_bad_configmap_data_over_1_mib(https: Https, namespace: str) -> None:
    """Upstream validation: ConfigMap data is limited to 1 MiB (422, field TooLong)."""
    body = configmap("toolong", data={"blob": "x" * (1100 * 1024)})
    rejected(https, "POST", cms(namespace), body, code=422, reason="Invalid")
    assert_absent(https, cms(namespace) + "/toolong")


def test_large_body_under_limits_is_read_whole(https: Https, namespace: str) -> None:
    """Control for the size cases: a 900 KiB ConfigMap is accepted and stored intact."""
    payload = "y" * (900 * 1024)
    reply = https.request(
        "POST", cms(namespace), configmap("large", data={"blob": payload}), timeout=30
    )
    assert reply.status == 201, reply.body[:500]
    stored = https.request("GET", cms(namespace) + "/large").json()
    assert len(stored["data"]["blob"]) == len(payload)


# --- patches ------------------------------------------------------------------------


def test_bad_patch_unsupported_content_type(https: Https, namespace: str) -> None:
    assert https.request("POST", cms(namespace), configmap("target", data={"a": "1"})).status == 201
    rejected(
        https,
        "PATCH",
        cms(namespace) + "/target",
        b"<data><a>2</a></data>",
        code=415,
        reason="UnsupportedMediaType",
        content_type="application/xml",
    )
    assert https.request("GET", cms(namespace) + "/target").json()["data"] == {"a": "1"}


def test_bad_strategic_patch_on_custom_resource(
    https: Https, namespace: str, blob_crd: str
) -> None:
    path = blob_crd.format(namespace=namespace)
    body = {
        "apiVersion": f"{CRD_GROUP}/v1",
        "kind": "Blob",
        "metadata": {"name": "b1"},
        "spec": {"size": 1},
    }
    assert https.request("POST", path, body).status == 201
    rejected(
        https,
        "PATCH",
        path + "/b1",
        {"spec": {"size": 2}},
        code=415,
        reason="UnsupportedMediaType",
        content_type="application/strategic-merge-patch+json",
    )
    assert https.request("GET", path + "/b1").json()["spec"]["size"] == 1


def test_bad_json_patch_not_a_list(https: Https, namespace: str) -> None:
    assert https.request("POST", cms(namespace), configmap("jp", data={"a": "1"})).status == 201
    rejected(
        https,
        "PATCH",
        cms(namespace) + "/jp",
        {"op": "replace", "path": "/data/a", "value": "2"},
        code=400,
        reason="BadRequest",
        content_type="application/json-patch+json",
    )


def test_bad_patch_missing_object(https: Https, namespace: str) -> None:
    status = rejected(
        https,
        "PATCH",
        cms(namespace) + "/ghost",
        {"data": {"a": "1"}},
        code=404,
        reason="NotFound",
        content_type="application/merge-patch+json",
    )
    assert status["details"]["name"] == "ghost"


# --- concurrency and lifecycle ---------------------------------------------------------


def _stale_copy(https: Https, namespace: str, name: str) -> dict[str, Any]:
    created = https.request("POST", cms(namespace), configmap(name, data={"a": "1"}))
    assert created.status == 201, created.body[:300]
    stale = created.json()
    moved = https.request(
        "PATCH",
        cms(namespace) + f"/{name}",
        {"data": {"a": "2"}},
        content_type="application/merge-patch+json",
    )
    assert moved.status == 200, moved.body[:300]
    assert moved.json()["metadata"]["resourceVersion"] != stale["metadata"]["resourceVersion"]
    return dict(stale)


def test_bad_stale_resource_version_put(https: Https, namespace: str) -> None:
    stale = _stale_copy(https, namespace, "stale")
    stale["data"] = {"a": "3"}
    status = rejected(https, "PUT", cms(namespace) + "/stale", stale, code=409, reason="Conflict")
    assert status["details"]["name"] == "stale"
    assert "the object has been modified" in status["message"]
    assert https.request("GET", cms(namespace) + "/stale").json()["data"] == {"a": "2"}


def test_bad_stale_resource_version_put_noop(https: Https, namespace: str) -> None:
    """The precondition is checked even when the body equals the current object."""
    stale = _stale_copy(https, namespace, "stalenoop")
    stale["data"] = {"a": "2"}
    rejected(https, "PUT", cms(namespace) + "/stalenoop", stale, code=409, reason="Conflict")


def test_bad_create_existing(https: Https, namespace: str) -> None:
    assert https.request("POST", cms(namespace), configmap("twice")).status == 201
    status = rejected(
        https, "POST", cms(namespace), configmap("twice"), code=409, reason="AlreadyExists"
    )
    assert status["details"]["name"] == "twice"
    assert status["details"]["kind"] == "configmaps"


def test_bad_create_in_terminating_namespace(https: Https) -> None:
    name = "t-bad-terminating"
    assert (
        https.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        ).status
        == 201
    )
    assert https.request("POST", cms(name), configmap("inside")).status == 201
    deleted = https.request("DELETE", f"/api/v1/namespaces/{name}")
    assert deleted.status == 200, deleted.body[:300]
    ns = https.request("GET", f"/api/v1/namespaces/{name}").json()
    assert ns["status"]["phase"] == "Terminating"
    assert ns["metadata"].get("deletionTimestamp")
    rejected(
        https,
        "POST",
        cms(name),
        configmap("late"),
        code=403,
        reason="Forbidden",
        message="because it is being terminated",
    )
    assert_absent(https, cms(name) + "/late")


def test_bad_create_in_missing_namespace(https: Https) -> None:
    rejected(
        https, "POST", cms("t-bad-no-such-namespace"), configmap("x"), code=404, reason="NotFound"
    )


# --- routing and authentication -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/default/bogons",
        "/apis/nope.example.com/v1/things",
        "/apis/apps/v9/deployments",
        "/api/v1/namespaces/default/configmaps/x/nosuchsub",
    ],
)
def test_bad_unknown_path(https: Https, path: str) -> None:
    rejected(https, "GET", path, code=404, reason="NotFound")


def test_bad_unauthenticated(https: Https) -> None:
    rejected(
        https, "GET", "/api/v1/namespaces", code=401, reason="Unauthorized", authenticated=False
    )
    before = https.revision()
    reply = https.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        configmap("anon"),
        authenticated=False,
    )
    assert reply.status == 401
    assert https.revision() == before


def test_bad_unknown_bearer_token(https: Https) -> None:
    reply = https.request(
        "GET",
        "/api/v1/namespaces",
        headers={"Authorization": "Bearer not-a-real-token"},
        authenticated=False,
    )
    assert reply.status == 401
    assert reply.content_type == JSON_CT
    assert reply.json()["reason"] == "Unauthorized"


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_health_without_credentials(https: Https, path: str) -> None:
    reply = https.request("GET", path, authenticated=False)
    assert reply.status == 200
    assert reply.body.strip() == b"ok"


# --- list and watch options -------------------------------------------------------------------


def test_bad_watch_too_old_resource_version(https: Https, namespace: str) -> None:
    """HTTP 200, then exactly one ERROR event carrying Status 410 Expired, then EOF."""
    status, content_type, events = https.watch_lines(
        cms(namespace) + "?watch=1&resourceVersion=1", timeout=10
    )
    assert status == 200
    assert content_type == JSON_CT
    assert len(events) == 1, events
    assert events[0]["type"] == "ERROR"
    obj = events[0]["object"]
    assert obj["kind"] == "Status"
    assert obj["code"] == 410
    assert obj["reason"] == "Expired"


def test_bad_send_initial_events_on_list(https: Https, namespace: str) -> None:
    started = time.monotonic()
    before = https.revision()
    reply = https.request("GET", cms(namespace) + "?sendInitialEvents=true", timeout=10)
    assert time.monotonic() - started < 10
    assert https.revision() == before
    assert reply.status in (400, 422), reply.body[:300]
    assert reply.content_type == JSON_CT
    assert reply.json()["kind"] == "Status"


def test_bad_send_initial_events_without_match(https: Https, namespace: str) -> None:
    reply = https.request(
        "GET", cms(namespace) + "?watch=1&sendInitialEvents=true&timeoutSeconds=5", timeout=10
    )
    assert reply.status in (400, 422), reply.body[:300]
    assert reply.json()["kind"] == "Status"


def test_bad_malformed_selectors(https: Https, namespace: str) -> None:
    rejected(
        https, "GET", cms(namespace) + "?labelSelector=a%20in%20(b", code=400, reason="BadRequest"
    )
    rejected(
        https,
        "GET",
        cms(namespace) + "?fieldSelector=spec.bogus%3Dx",
        code=400,
        reason="BadRequest",
    )


def test_bad_malformed_continue_token(https: Https, namespace: str) -> None:
    rejected(
        https,
        "GET",
        cms(namespace) + "?limit=1&continue=not-a-token",
        code=400,
        reason="BadRequest",
    )


def test_watch_send_initial_events(https: Https, namespace: str) -> None:
    names = {"init-a", "init-b", "init-c"}
    last_rv = 0
    for name in sorted(names):
        reply = https.request("POST", cms(namespace), configmap(name))
        assert reply.status == 201
        last_rv = int(reply.json()["metadata"]["resourceVersion"])
    query = "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=10"
    status, _, events = https.watch_lines(
        cms(namespace) + query, until=lambda e: e["type"] == "BOOKMARK", timeout=10
    )
    assert status == 200
    assert events, "no events before the watch ended"
    *initial, bookmark = events
    # Every namespace also holds the cluster CA's ConfigMap, as upstream's do.
    initial = [e for e in initial if e["object"]["metadata"]["name"] != "kube-root-ca.crt"]
    assert [e["type"] for e in initial] == ["ADDED"] * len(names), [e["type"] for e in events]
    assert {e["object"]["metadata"]["name"] for e in initial} == names
    assert bookmark["type"] == "BOOKMARK"
    meta = bookmark["object"]["metadata"]
    assert meta["annotations"]["k8s.io/initial-events-end"] == "true"
    assert int(meta["resourceVersion"]) >= last_rv
