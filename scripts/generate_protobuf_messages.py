"""Generate ``src/nodeless/api/protobuf_messages.json`` from Kubernetes ``generated.proto`` files.

kubectl sends built-in kinds as Kubernetes protobuf; ``nodeless.api.protobuf`` decodes
them with a table of field numbers. That table comes from upstream's
``generated.proto`` files (k8s.io/api, k8s.io/apimachinery,
k8s.io/apiextensions-apiserver), which CI cannot fetch, so this script turns a
directory of them into the committed JSON and the JSON is what ships.

Usage::

    python scripts/generate_protobuf_messages.py /tmp/protos [-o src/nodeless/api/protobuf_messages.json]

Every ``*.proto`` under the directory is read (its ``package`` line says what it
holds; file names do not matter). Only the subset of proto2 that go-to-protobuf
emits is understood: ``message`` blocks (nested too), ``optional``/``repeated``
fields and ``map<K, V>`` fields.

The output maps each message's full name to ``{field number: [json name, type,
label]}`` where label is ``o`` (singular), ``r`` (repeated), ``m`` (map; keys are
strings) or ``i`` (a Go struct embedded with ``json:",inline"``, whose fields
appear directly in its parent's JSON). go-to-protobuf names fields after their
JSON names, except for the embedded structs and a few legacy spellings; both are
listed here because the .proto files do not say.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SCALARS = frozenset(
    {
        "double",
        "float",
        "int32",
        "int64",
        "uint32",
        "uint64",
        "sint32",
        "sint64",
        "fixed32",
        "fixed64",
        "sfixed32",
        "sfixed64",
        "bool",
        "string",
        "bytes",
    }
)

CORE = "k8s.io.api.core.v1"
NETWORKING = "k8s.io.api.networking.v1"
APIEXT = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1"
META = "k8s.io.apimachinery.pkg.apis.meta.v1"

# Go structs embedded with `json:",inline"`: their fields belong to the parent in JSON.
INLINE = frozenset(
    {
        (f"{CORE}.ConfigMapEnvSource", "localObjectReference"),
        (f"{CORE}.ConfigMapKeySelector", "localObjectReference"),
        (f"{CORE}.ConfigMapProjection", "localObjectReference"),
        (f"{CORE}.ConfigMapVolumeSource", "localObjectReference"),
        (f"{CORE}.SecretEnvSource", "localObjectReference"),
        (f"{CORE}.SecretKeySelector", "localObjectReference"),
        (f"{CORE}.SecretProjection", "localObjectReference"),
        (f"{CORE}.EphemeralContainer", "ephemeralContainerCommon"),
        (f"{CORE}.Volume", "volumeSource"),
        (f"{CORE}.PersistentVolumeSpec", "persistentVolumeSource"),
        (f"{CORE}.Probe", "handler"),
        (f"{CORE}.VolumeMountStatus", "volumeStatus"),
        (f"{NETWORKING}.IngressRule", "ingressRuleValue"),
    }
)

# Proto field names that differ from the JSON names.
RENAMES: dict[str, dict[str, str]] = {
    "k8s.io.api.authentication.v1.BoundObjectReference": {"uID": "uid", "aPIVersion": "apiVersion"},
    f"{NETWORKING}.IngressClassParametersReference": {"aPIGroup": "apiGroup"},
    f"{APIEXT}.JSONSchemaProps": {
        "schema": "$schema",
        "ref": "$ref",
        "xKubernetesPreserveUnknownFields": "x-kubernetes-preserve-unknown-fields",
        "xKubernetesEmbeddedResource": "x-kubernetes-embedded-resource",
        "xKubernetesIntOrString": "x-kubernetes-int-or-string",
        "xKubernetesListMapKeys": "x-kubernetes-list-map-keys",
        "xKubernetesListType": "x-kubernetes-list-type",
        "xKubernetesMapType": "x-kubernetes-map-type",
        "xKubernetesValidations": "x-kubernetes-validations",
    },
}

# API group of each k8s.io/api package directory; the core group has none.
GROUPS = {
    "core": "",
    "apps": "apps",
    "batch": "batch",
    "autoscaling": "autoscaling",
    "policy": "policy",
    "networking": "networking.k8s.io",
    "coordination": "coordination.k8s.io",
    "events": "events.k8s.io",
    "discovery": "discovery.k8s.io",
    "rbac": "rbac.authorization.k8s.io",
    "storage": "storage.k8s.io",
    "scheduling": "scheduling.k8s.io",
    "node": "node.k8s.io",
    "authentication": "authentication.k8s.io",
    "authorization": "authorization.k8s.io",
    "certificates": "certificates.k8s.io",
    "admissionregistration": "admissionregistration.k8s.io",
    "flowcontrol": "flowcontrol.apiserver.k8s.io",
    "resource": "resource.k8s.io",
}

# Messages that look like kinds (ObjectMeta, an -Options name) but are parts of other kinds.
NOT_KINDS = frozenset(
    {
        "PodTemplateSpec",
        "JobTemplateSpec",
        "PersistentVolumeClaimTemplate",
        "SELinuxOptions",
        "WindowsSecurityContextOptions",
    }
)

# Request-option kinds of meta.k8s.io/v1 (registered in every group version).
META_KINDS = frozenset(
    {
        "CreateOptions",
        "DeleteOptions",
        "GetOptions",
        "ListOptions",
        "PatchOptions",
        "UpdateOptions",
        "Status",
        "WatchEvent",
        "PartialObjectMetadata",
        "PartialObjectMetadataList",
        "List",
        "APIGroup",
        "APIGroupList",
        "APIResourceList",
        "APIVersions",
    }
)

TOKEN = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*|\d+|[{}=;<>,\[\]()]|\"[^\"]*\"|'[^']*'")


class ProtoError(Exception):
    """The input is outside the subset of proto2 this generator understands."""


def _tokens(text: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return TOKEN.findall(text)


Field = tuple[str, int, str, str]  # (proto name, number, type as written, label)


def parse(text: str) -> tuple[str, dict[str, list[Field]]]:
    """Return the package and ``{message path relative to it: fields}`` of one file."""
    toks = _tokens(text)
    package = ""
    messages: dict[str, list[Field]] = {}
    stack: list[str] = []
    i = 0

    def skip_statement(j: int) -> int:
        while toks[j] != ";":
            j += 1
        return j + 1

    def field_end(j: int) -> int:
        # `= N` then optional `[...]` options, then `;`.
        if toks[j] != "=":
            raise ProtoError(f"expected '=' near {toks[j - 3 : j + 3]}")
        number = int(toks[j + 1])
        j += 2
        if toks[j] == "[":
            while toks[j] != "]":
                j += 1
            j += 1
        if toks[j] != ";":
            raise ProtoError(f"expected ';' near {toks[j - 3 : j + 3]}")
        return number

    while i < len(toks):
        tok = toks[i]
        if tok in ("syntax", "import", "option"):
            i = skip_statement(i)
        elif tok == "package":
            package = toks[i + 1]
            i = skip_statement(i)
        elif tok == "message":
            stack.append(toks[i + 1])
            messages.setdefault(".".join(stack), [])
            if toks[i + 2] != "{":
                raise ProtoError(f"expected '{{' after message {toks[i + 1]}")
            i += 3
        elif tok == "}":
            if not stack:
                raise ProtoError("unbalanced '}'")
            stack.pop()
            i += 1
        elif tok in ("optional", "repeated", "required"):
            if not stack:
                raise ProtoError(f"field outside a message: {toks[i : i + 4]}")
            label = "r" if tok == "repeated" else "o"
            typ, name = toks[i + 1], toks[i + 2]
            number = field_end(i + 3)
            messages[".".join(stack)].append((name, number, typ, label))
            i = skip_statement(i)
        elif tok == "map":
            # map < K , V > name = N ;
            key, value, name = toks[i + 2], toks[i + 4], toks[i + 6]
            if key != "string":
                raise ProtoError(f"map key {key} is not string in {'.'.join(stack)}.{name}")
            number = field_end(i + 7)
            messages[".".join(stack)].append((name, number, value, "m"))
            i = skip_statement(i)
        elif tok == "reserved":
            i = skip_statement(i)
        else:
            raise ProtoError(f"unexpected token {tok!r} near {toks[i : i + 5]}")
    if stack:
        raise ProtoError("unterminated message")
    return package, messages


def _resolve(typ: str, scope: str, known: set[str]) -> str:
    if typ in SCALARS:
        return typ
    if typ.startswith("."):
        full = typ[1:]
        if full not in known:
            raise ProtoError(f"unknown type {typ}")
        return full
    parts = scope.split(".")
    while True:
        candidate = ".".join([*parts, typ]) if parts else typ
        if candidate in known:
            return candidate
        if not parts:
            raise ProtoError(f"unknown type {typ} in {scope}")
        parts.pop()


def _api_version(package: str) -> str | None:
    if package == APIEXT:
        return "apiextensions.k8s.io/v1"
    if package == META:
        return "meta.k8s.io/v1"
    m = re.fullmatch(r"k8s\.io\.api\.([a-z]+)\.(v[0-9a-z]+)", package)
    if not m or m.group(1) not in GROUPS:
        return None
    group = GROUPS[m.group(1)]
    return f"{group}/{m.group(2)}" if group else m.group(2)


def _is_kind(name: str, fields: list[Field], package: str) -> bool:
    if "." in name or name in NOT_KINDS:
        return False
    if package == META:
        return name in META_KINDS
    if name.endswith("Options") or name == "ConversionReview":
        return True
    return any(
        f[0] == "metadata" and f[2].endswith(("meta.v1.ObjectMeta", "meta.v1.ListMeta"))
        for f in fields
    )


def generate(proto_dir: Path) -> dict[str, object]:
    files = sorted(proto_dir.rglob("*.proto"))
    if not files:
        raise ProtoError(f"no .proto files under {proto_dir}")
    parsed = [parse(p.read_text()) for p in files]
    known = {f"{pkg}.{name}" for pkg, msgs in parsed for name in msgs}
    messages: dict[str, dict[str, list[str]]] = {}
    kinds: dict[str, dict[str, str]] = {}
    for package, msgs in parsed:
        api_version = _api_version(package)
        for name, fields in msgs.items():
            full = f"{package}.{name}"
            renames = RENAMES.get(full, {})
            out: dict[str, list[str]] = {}
            for proto_name, number, typ, label in sorted(fields, key=lambda f: f[1]):
                resolved = _resolve(typ, full, known)
                if (full, proto_name) in INLINE:
                    label = "i"
                out[str(number)] = [renames.get(proto_name, proto_name), resolved, label]
            messages[full] = out
            if api_version and _is_kind(name, fields, package):
                kinds.setdefault(api_version, {})[name] = full
    stale = [
        (message, field)
        for message, field in INLINE
        if message in messages and all(spec[0] != field for spec in messages[message].values())
    ]
    if stale:
        raise ProtoError(f"inline fields missing from their messages: {stale}")
    return {
        "messages": dict(sorted(messages.items())),
        "kinds": {v: dict(sorted(k.items())) for v, k in sorted(kinds.items())},
    }


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("proto_dir", type=Path, help="directory holding generated.proto files")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=here / "src" / "nodeless" / "api" / "protobuf_messages.json",
    )
    args = parser.parse_args(argv)
    try:
        data = generate(args.proto_dir)
    except ProtoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output.write_text(json.dumps(data, separators=(",", ":"), sort_keys=False) + "\n")
    messages = data["messages"]
    kinds = data["kinds"]
    assert isinstance(messages, dict) and isinstance(kinds, dict)
    count = sum(len(k) for k in kinds.values())
    print(f"wrote {args.output}: {len(messages)} messages, {count} kinds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
