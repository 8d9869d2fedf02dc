"""Kubernetes protobuf request bodies decode to the objects their JSON would have been.

Bodies are built with a tiny encoder below (or taken from client-go's own tests)
and mimic what gogo-proto writes: every non-pointer scalar, even when zero.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import struct
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from nodeless.api import errors, protobuf

# --- a minimal protobuf encoder, for tests only ------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def vint(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def blob(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def s(num: int, text: str) -> bytes:
    return blob(num, text.encode())


def msg(num: int, *parts: bytes) -> bytes:
    return blob(num, b"".join(parts))


def entry(num: int, key: str, value: bytes) -> bytes:
    """One map entry: key in field 1, value (already tagged as field 2) after it."""
    return msg(num, s(1, key), value)


def double(num: int, value: float) -> bytes:
    return _varint(num << 3 | 1) + struct.pack("<d", value)


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = msg(1, s(1, api_version), s(2, kind))
    return protobuf.MAGIC + type_meta + blob(2, raw) + s(3, "") + s(4, "")


def int_or_string(num: int, value: int | str) -> bytes:
    if isinstance(value, str):
        return msg(num, vint(1, 1), vint(2, 0), s(3, value))
    return msg(num, vint(1, 0), vint(2, value), s(3, ""))


def quantity(num: int, text: str) -> bytes:
    return msg(num, s(1, text))


def empty_object_meta(*extra: bytes) -> bytes:
    """ObjectMeta as gogo writes it: every string and the empty creationTimestamp."""
    return msg(
        1,
        *extra,
        s(2, ""),
        s(4, ""),
        s(5, ""),
        s(6, ""),
        vint(7, 0),
        msg(8),
    )


def decode(api_version: str, kind: str, *parts: bytes) -> dict[str, Any]:
    return protobuf.decode(envelope(api_version, kind, b"".join(parts)))


# --- the envelope and well-known kinds ------------------------------------------------

# client-go's TestClientContentType Pod "snorlax", completed with its status and the
# envelope's trailing contentEncoding/contentType.
SNORLAX = bytes.fromhex(
    "6b387300 0a090a02 76311203 506f6412 490a170a 07736e6f 726c6178 12001a00"
    "22002a00 32003800 4200121c 1a003200 42004a00 52005800 60006800 8201008a"
    "01009a01 00c20100 1a100a00 1a002200 2a003200 4a005a00 72001a00 2200"
)


def test_client_go_pod_decodes_without_zero_value_noise() -> None:
    assert protobuf.decode(SNORLAX) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "snorlax"},
        "spec": {},
        "status": {},
    }


def test_apiversion_and_kind_lead_the_object() -> None:
    obj = protobuf.decode(SNORLAX)
    assert list(obj)[:2] == ["apiVersion", "kind"]


def test_configmap_data_keeps_empty_values_and_labels() -> None:
    obj = decode(
        "v1",
        "ConfigMap",
        empty_object_meta(
            s(1, "settings"),
            s(3, "default"),
            entry(11, "app", s(2, "web")),
            entry(11, "empty", s(2, "")),
        ),
        entry(2, "color", s(2, "blue")),
        entry(2, "blank", s(2, "")),
    )
    assert obj == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "settings",
            "namespace": "default",
            "labels": {"app": "web", "empty": ""},
        },
        "data": {"color": "blue", "blank": ""},
    }


def test_configmap_immutable_false_is_kept_because_go_uses_a_pointer() -> None:
    obj = decode("v1", "ConfigMap", empty_object_meta(s(1, "c")), vint(4, 0))
    assert obj["immutable"] is False


def test_secret_bytes_become_base64_strings() -> None:
    obj = decode(
        "v1",
        "Secret",
        empty_object_meta(s(1, "creds")),
        entry(2, "password", blob(2, b"hunter2")),
        entry(2, "binary", blob(2, b"\x00\xff")),
        s(3, "Opaque"),
    )
    assert obj["data"] == {
        "password": base64.b64encode(b"hunter2").decode(),
        "binary": base64.b64encode(b"\x00\xff").decode(),
    }
    assert obj["type"] == "Opaque"


def _container() -> bytes:
    resources = msg(
        8,
        entry(1, "cpu", quantity(2, "500m")),
        entry(2, "memory", quantity(2, "64Mi")),
    )
    port = msg(6, s(1, ""), vint(2, 0), vint(3, 80), s(4, "TCP"), s(5, ""))
    return msg(
        2,
        s(1, "nginx"),
        s(2, "nginx:1.27"),
        port,
        resources,
        s(5, ""),
        s(13, "/dev/termination-log"),
        s(14, "IfNotPresent"),
        vint(16, 0),
        vint(17, 0),
        vint(18, 0),
    )


def test_deployment_keeps_zero_replicas_and_decodes_int_or_string() -> None:
    labels = entry(11, "app", s(2, "web"))
    selector = msg(2, entry(1, "app", s(2, "web")))
    template = msg(3, empty_object_meta(labels), msg(2, _container(), s(3, "Always")))
    strategy = msg(
        4,
        s(1, "RollingUpdate"),
        msg(2, int_or_string(1, 1), int_or_string(2, "25%")),
    )
    spec = msg(2, vint(1, 0), selector, template, strategy, vint(5, 0), vint(7, 0))
    obj = decode("apps/v1", "Deployment", empty_object_meta(s(1, "web"), labels), spec, msg(3))
    assert obj == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {
                                "limits": {"cpu": "500m"},
                                "requests": {"memory": "64Mi"},
                            },
                            "terminationMessagePath": "/dev/termination-log",
                            "imagePullPolicy": "IfNotPresent",
                        }
                    ],
                    "restartPolicy": "Always",
                },
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"},
            },
        },
        "status": {},
    }


def test_pointer_int_or_string_zero_is_kept_but_plain_zero_port_is_dropped() -> None:
    strategy = msg(4, s(1, "RollingUpdate"), msg(2, int_or_string(1, 0), int_or_string(2, 1)))
    obj = decode("apps/v1", "Deployment", msg(2, strategy))
    assert obj["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    service = decode("v1", "Service", msg(2, msg(1, vint(3, 80), int_or_string(4, 0))))
    assert service["spec"]["ports"] == [{"port": 80}]


def test_self_subject_access_review_carries_resource_attributes() -> None:
    attributes = msg(1, s(1, "default"), s(2, "create"), s(3, ""), s(4, ""), s(5, "pods"))
    obj = decode(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        empty_object_meta(),
        msg(2, attributes),
        msg(3, vint(1, 0), s(2, ""), s(3, ""), vint(4, 0)),
    )
    assert obj == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {},
        "spec": {
            "resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}
        },
        "status": {"allowed": False},
    }


def test_empty_self_subject_review_decodes_to_its_skeleton() -> None:
    obj = decode("authentication.k8s.io/v1", "SelfSubjectReview", empty_object_meta(), msg(2))
    assert obj == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
        "metadata": {},
        "status": {},
    }
    bare = decode("authentication.k8s.io/v1", "SelfSubjectReview")
    assert bare == {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}


def test_token_request_uses_json_names_where_proto_names_differ() -> None:
    bound = msg(3, s(1, "Pod"), s(2, "v1"), s(3, "web-0"), s(4, "1234"))
    obj = decode(
        "authentication.k8s.io/v1",
        "TokenRequest",
        empty_object_meta(),
        msg(2, s(1, "api"), vint(4, 3600), bound),
        msg(3, s(1, ""), msg(2)),
    )
    assert obj["spec"] == {
        "audiences": ["api"],
        "expirationSeconds": 3600,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-0", "uid": "1234"},
    }
    assert obj["status"] == {}


def test_eviction_keeps_a_zero_grace_period() -> None:
    obj = decode(
        "policy/v1",
        "Eviction",
        empty_object_meta(s(1, "web-0"), s(3, "default")),
        msg(2, vint(1, 0), s(4, "Foreground")),
    )
    assert obj["metadata"] == {"name": "web-0", "namespace": "default"}
    assert obj["deleteOptions"] == {"gracePeriodSeconds": 0, "propagationPolicy": "Foreground"}


def test_delete_options_are_found_under_any_group_version() -> None:
    obj = decode("v1", "DeleteOptions", vint(1, 30), s(4, "Background"))
    assert obj == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 30,
        "propagationPolicy": "Background",
    }


# Bodies kubectl 1.32 sent to a recording server for `create deployment web
# --image=nginx:1.27 --replicas=0 --port=80`, `auth whoami` and `create token default
# --duration=1h --audience=api`.
KUBECTL_DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412c4010a260a0377656212001a07"
    "64656661756c7422002a003200380042005a0a0a036170701203776562128b010800120c0a0a0a0361"
    "707012037765621a710a1c0a0012001a0022002a003200380042005a0a0a03617070120377656212"
    "5112330a056e67696e78120a6e67696e783a312e32372a00320a0a001000185022002a0042006a00"
    "7200800100880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2"
    "010022020a00280038001a0c0800100018002000280038001a002200"
)
KUBECTL_WHOAMI = bytes.fromhex(
    "6b3873000a2d0a1861757468656e7469636174696f6e2e6b38732e696f2f7631121153656c665375"
    "626a656374526576696577121a0a100a0012001a0022002a0032003800420012060a040a0012001a"
    "002200"
)
KUBECTL_TOKEN = bytes.fromhex(
    "6b3873000a280a1861757468656e7469636174696f6e2e6b38732e696f2f7631120c546f6b656e52"
    "65717565737412220a100a0012001a0022002a0032003800420012080a0361706920901c1a040a00"
    "12001a002200"
)


def test_kubectl_create_deployment_body_matches_its_json() -> None:
    labels = {"app": "web"}
    assert protobuf.decode(KUBECTL_DEPLOYMENT) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80}],
                            "resources": {},
                        }
                    ]
                },
            },
            "strategy": {},
        },
        "status": {},
    }


def test_kubectl_whoami_and_token_bodies_decode() -> None:
    assert protobuf.decode(KUBECTL_WHOAMI) == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
        "metadata": {},
        "status": {"userInfo": {}},
    }
    assert protobuf.decode(KUBECTL_TOKEN) == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {},
        "spec": {"audiences": ["api"], "expirationSeconds": 3600},
        "status": {},
    }


# --- field encodings -------------------------------------------------------------------


def test_embedded_go_structs_are_inlined_like_json() -> None:
    env = msg(
        7,
        s(1, "COLOR"),
        s(2, ""),
        msg(3, msg(3, msg(1, s(1, "settings")), s(2, "color"), vint(3, 0))),
    )
    probe = msg(10, msg(1, msg(2, s(1, "/healthz"), int_or_string(2, 8080))), vint(2, 5))
    container = msg(2, s(1, "app"), env, probe)
    volumes = [
        msg(1, s(1, "scratch"), msg(2, msg(2, s(1, "")))),
        msg(1, s(1, "conf"), msg(2, msg(19, msg(1, s(1, "settings")), vint(3, 420)))),
    ]
    obj = decode("v1", "Pod", msg(2, *volumes, container))
    spec = obj["spec"]
    assert spec["volumes"] == [
        {"name": "scratch", "emptyDir": {}},
        {"name": "conf", "configMap": {"name": "settings", "defaultMode": 420}},
    ]
    (c,) = spec["containers"]
    assert c["env"] == [
        {
            "name": "COLOR",
            "valueFrom": {
                "configMapKeyRef": {"name": "settings", "key": "color", "optional": False}
            },
        }
    ]
    assert c["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": 8080},
        "initialDelaySeconds": 5,
    }


def test_pointer_booleans_and_ids_keep_their_zero_values() -> None:
    security = msg(15, vint(2, 0), vint(4, 0), vint(7, 0))
    spec = msg(2, msg(2, s(1, "app"), security), vint(21, 0), vint(30, 0), vint(11, 0))
    obj = decode("v1", "Pod", spec)
    assert obj["spec"] == {
        "containers": [
            {
                "name": "app",
                "securityContext": {
                    "privileged": False,
                    "runAsUser": 0,
                    "allowPrivilegeEscalation": False,
                },
            }
        ],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }


def test_negative_int32_decodes_from_its_ten_byte_varint() -> None:
    obj = decode("v1", "Pod", msg(2, vint(25, -5)))
    assert obj["spec"] == {"priority": -5}


def test_repeated_numbers_decode_packed_and_unpacked() -> None:
    packed = blob(4, _varint(1000) + _varint(2000))
    unpacked = vint(4, 3000)
    obj = decode("v1", "Pod", msg(2, msg(14, packed, unpacked)))
    assert obj["spec"]["securityContext"] == {"supplementalGroups": [1000, 2000, 3000]}


def test_times_render_as_rfc3339_and_empty_times_disappear() -> None:
    meta = msg(1, s(1, "n"), msg(8, vint(1, 1_700_000_000)), msg(9))
    condition = msg(2, s(1, "Ready"), s(2, "True"), msg(4, vint(1, 1_700_000_060), vint(2, 5)))
    obj = decode("v1", "Namespace", meta, msg(3, s(1, "Active"), condition))
    assert obj["metadata"] == {"name": "n", "creationTimestamp": "2023-11-14T22:13:20Z"}
    assert obj["status"]["conditions"] == [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2023-11-14T22:14:20Z"}
    ]


def test_micro_times_keep_microseconds() -> None:
    renew = msg(4, vint(1, 1_700_000_000), vint(2, 123_456_789))
    obj = decode("coordination.k8s.io/v1", "Lease", msg(2, s(1, "me"), vint(2, 15), renew))
    assert obj["spec"] == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "renewTime": "2023-11-14T22:13:20.123456Z",
    }


def test_raw_extensions_and_managed_fields_parse_their_json() -> None:
    fields = json.dumps({"f:data": {}}).encode()
    managed = msg(17, s(1, "kubectl"), s(2, "Update"), s(6, "FieldsV1"), msg(7, blob(1, fields)))
    data = msg(2, blob(1, json.dumps({"spec": {"replicas": 2}}).encode()))
    obj = decode("apps/v1", "ControllerRevision", msg(1, s(1, "rev"), managed), data, vint(3, 2))
    assert obj["metadata"]["managedFields"] == [
        {
            "manager": "kubectl",
            "operation": "Update",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {}},
        }
    ]
    assert obj["data"] == {"spec": {"replicas": 2}}
    assert obj["revision"] == 2


def test_crd_schemas_use_openapi_spellings() -> None:
    prop = entry(29, "size", msg(2, s(5, "integer"), double(11, 0), double(9, 2.5)))
    schema = msg(
        1,
        s(5, "object"),
        prop,
        msg(30, vint(1, 0)),
        vint(38, 1),
        s(3, "#/defs/x"),
    )
    version = msg(7, s(1, "v1"), vint(2, 1), vint(3, 0), msg(4, schema), msg(5, msg(1)))
    obj = decode("apiextensions.k8s.io/v1", "CustomResourceDefinition", msg(2, version))
    (v,) = obj["spec"]["versions"]
    assert v["served"] is True and v["storage"] is False
    assert v["subresources"] == {"status": {}}
    assert v["schema"]["openAPIV3Schema"] == {
        "type": "object",
        "properties": {"size": {"type": "integer", "minimum": 0, "maximum": 2.5}},
        "additionalProperties": False,
        "x-kubernetes-preserve-unknown-fields": True,
        "$ref": "#/defs/x",
    }


def test_unknown_fields_are_skipped() -> None:
    obj = decode("v1", "ConfigMap", msg(1, s(1, "c"), s(99, "future")), vint(77, 1))
    assert obj == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}


def test_user_extra_values_are_plain_string_lists() -> None:
    spec = msg(2, s(3, "alice"), entry(5, "scopes", msg(2, s(1, "a"), s(1, "b"))))
    obj = decode("authorization.k8s.io/v1", "SubjectAccessReview", spec)
    assert obj["spec"] == {"user": "alice", "extra": {"scopes": ["a", "b"]}}


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{}", id="json-not-protobuf"),
        pytest.param(b"k8s", id="short-magic"),
        pytest.param(b"k8s\x01" + SNORLAX[4:], id="bad-magic"),
        pytest.param(protobuf.MAGIC + b"\x0a\x09\x0a\x02v1", id="length-past-end"),
        pytest.param(envelope("v1", "Pod", b"\x12\x80"), id="truncated-varint"),
        pytest.param(envelope("v1", "Pod", b"\x08" + b"\xff" * 11), id="overlong-varint"),
        pytest.param(envelope("v1", "ConfigMap", s(1, "x")), id="message-as-scalar-mismatch"),
        pytest.param(envelope("v1", "ConfigMap", msg(1, vint(1, 5))), id="string-with-varint"),
        pytest.param(envelope("v1", "ConfigMap", msg(1, blob(1, b"\xff"))), id="bad-utf8"),
        pytest.param(envelope("v1", "ConfigMap", b"\x0b"), id="group-wire-type"),
        pytest.param(protobuf.MAGIC + blob(2, b""), id="no-type-meta"),
        pytest.param(
            envelope("apps/v1", "ControllerRevision", msg(2, blob(1, b"{nope"))),
            id="raw-extension-not-json",
        ),
        pytest.param(
            envelope("coordination.k8s.io/v1", "Lease", msg(2, msg(4, vint(1, 10**15)))),
            id="time-out-of-range",
        ),
        pytest.param(
            envelope(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                msg(2, msg(7, msg(4, msg(1, double(9, float("nan")))))),
            ),
            id="nan-number",
        ),
    ],
)
def test_malformed_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(errors.StatusError) as caught:
        protobuf.decode(body)
    assert caught.value.code == 400


def test_kinds_without_a_definition_are_unsupported_media() -> None:
    with pytest.raises(errors.StatusError) as caught:
        protobuf.decode(envelope("example.com/v1", "Widget", b""))
    assert caught.value.code == 415
    assert caught.value.reason == "UnsupportedMediaType"


# --- helpers and the data table -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/vnd.kubernetes.protobuf", True),
        ("application/vnd.kubernetes.protobuf; charset=utf-8", True),
        ("application/json", False),
        (None, False),
    ],
)
def test_is_protobuf_reads_the_media_type(content_type: str | None, expected: bool) -> None:
    assert protobuf.is_protobuf(content_type) is expected


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (999, "999ns"),
        (1_500, "1.5µs"),
        (2_000_000, "2ms"),
        (1_500_000_000, "1.5s"),
        (90 * 10**9, "1m30s"),
        (3600 * 10**9, "1h0m0s"),
        (-(5 * 10**9), "-5s"),
    ],
)
def test_durations_format_as_go_does(ns: int, text: str) -> None:
    assert protobuf.go_duration(ns) == text


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("v1", "Pod"),
        ("v1", "Namespace"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "CronJob"),
        ("policy/v1", "Eviction"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("networking.k8s.io/v1", "Ingress"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ],
)
def test_kubectl_kinds_have_definitions(api_version: str, kind: str) -> None:
    assert protobuf.message_for(api_version, kind) is not None


def test_data_table_references_only_known_types() -> None:
    data = json.loads((resources.files("nodeless.api") / "protobuf_messages.json").read_text())
    messages = data["messages"]
    scalars = {"double", "float", "int32", "int64", "uint32", "uint64", "bool", "string", "bytes"}
    for name, fields in messages.items():
        for _, typ, label in fields.values():
            assert typ in scalars or typ in messages, (name, typ)
            assert label in {"o", "r", "m", "i"}
    for kinds in data["kinds"].values():
        for full in kinds.values():
            assert full in messages


def test_generator_reads_nested_messages_maps_and_comments(tmp_path: Path) -> None:
    script = Path(__file__).parents[3] / "scripts" / "generate_protobuf_messages.py"
    spec = importlib.util.spec_from_file_location("generate_protobuf_messages", script)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    (tmp_path / "meta.proto").write_text(
        "syntax = 'proto2';\npackage k8s.io.apimachinery.pkg.apis.meta.v1;\n"
        "message ObjectMeta { optional string name = 1; }\n"
    )
    (tmp_path / "widgets.proto").write_text(
        """
        // A comment with message Fake { in it.
        package k8s.io.api.apps.v9;
        /* block
           comment */
        message Widget {
          optional k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta metadata = 1;
          map<string, Part> parts = 3 [(gogoproto.nullable) = false];
          repeated Part.Bolt bolts = 2;
          message Part { message Bolt { optional int32 size = 1; } }
        }
        """
    )
    data = generator.generate(tmp_path)
    assert data["kinds"] == {"apps/v9": {"Widget": "k8s.io.api.apps.v9.Widget"}}
    assert data["messages"]["k8s.io.api.apps.v9.Widget"] == {
        "1": ["metadata", "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta", "o"],
        "2": ["bolts", "k8s.io.api.apps.v9.Widget.Part.Bolt", "r"],
        "3": ["parts", "k8s.io.api.apps.v9.Widget.Part", "m"],
    }
