"""Image references, pull policies and pull-secret credentials, read as the
runtimes and the kubelet read them (no registry needed)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from nodeless.instances.providers.cri import imagerefs, registryauth

# --- references ---


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("team/app:v2", "docker.io/team/app:v2"),
        ("index.docker.io/team/app", "docker.io/team/app:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("127.0.0.1:5000/busybox:1", "127.0.0.1:5000/busybox:1"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b/c:tag", "localhost:5000/a/b/c:tag"),
        ("registry.local/nodeless/httpd:1.0", "registry.local/nodeless/httpd:1.0"),
        ("Registry.Example.com/app", "Registry.Example.com/app:latest"),
        ("123/app", "docker.io/123/app:latest"),
    ],
)
def test_references_are_normalized_like_docker(reference: str, expected: str) -> None:
    assert imagerefs.normalize(reference) == expected


def test_a_digest_pins_the_image_without_a_default_tag() -> None:
    digest = "sha256:" + "a" * 64

    ref = imagerefs.parse(f"busybox@{digest}")
    tagged = imagerefs.parse(f"127.0.0.1:5000/app:1@{digest}")

    assert (ref.name, ref.tag, ref.digest) == ("docker.io/library/busybox", "", digest)
    assert (tagged.domain, tagged.path, tagged.tag) == ("127.0.0.1:5000", "app", "1")
    assert str(tagged) == f"127.0.0.1:5000/app:1@{digest}"


@pytest.mark.parametrize(
    "reference",
    [
        "",
        " busybox",
        "BusyBox",
        "team/App:1",
        "busybox:",
        "busybox:bad/tag",
        "app@sha256:12",
        "a//b",
    ],
)
def test_invalid_references_are_refused(reference: str) -> None:
    with pytest.raises(imagerefs.InvalidImageName):
        imagerefs.parse(reference)


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("127.0.0.1:5000/busybox", "Always"),
        ("busybox:1.36", "IfNotPresent"),
        ("127.0.0.1:5000/busybox:1", "IfNotPresent"),
        ("busybox@sha256:" + "b" * 64, "IfNotPresent"),
    ],
)
def test_pull_policy_defaults_like_the_apiserver(image: str, policy: str) -> None:
    assert imagerefs.default_pull_policy(image) == policy
    assert imagerefs.pull_policy({"image": image}) == policy


def test_an_explicit_pull_policy_wins() -> None:
    assert imagerefs.pull_policy({"image": "busybox", "imagePullPolicy": "Never"}) == "Never"
    assert imagerefs.pull_policy({"image": "busybox:1", "imagePullPolicy": "Bogus"}) == (
        "IfNotPresent"
    )


# --- pull secrets ---


def _secret(auths: dict[str, Any], key: str = ".dockerconfigjson") -> dict[str, Any]:
    doc = {"auths": auths} if key == ".dockerconfigjson" else auths
    return {"data": {key: base64.b64encode(json.dumps(doc).encode()).decode()}}


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_dockerconfigjson_and_legacy_dockercfg_secrets_are_read() -> None:
    modern = registryauth.docker_config_from_secret(
        _secret({"127.0.0.1:5000": {"auth": _auth("a", "b")}})
    )
    legacy = registryauth.docker_config_from_secret(
        _secret({"127.0.0.1:5000": {"auth": _auth("a", "b")}}, key=".dockercfg")
    )

    assert modern == legacy == {"auths": {"127.0.0.1:5000": {"auth": _auth("a", "b")}}}


@pytest.mark.parametrize(
    "secret",
    [{}, {"data": {".dockerconfigjson": "%%%"}}, {"data": {".dockerconfigjson": "bm90IGpzb24="}}],
)
def test_a_secret_that_is_not_a_docker_config_is_refused(secret: dict[str, Any]) -> None:
    with pytest.raises(registryauth.CredentialsError):
        registryauth.docker_config_from_secret(secret)


def test_credentials_match_the_registry_host_and_port() -> None:
    configs = [
        {
            "auths": {
                "127.0.0.1:5000": {"auth": _auth("alice", "one")},
                "127.0.0.1:6000": {"username": "bob", "password": "two"},
                "127.0.0.1": {"username": "carol", "password": "three"},
            }
        }
    ]

    [auth] = registryauth.credentials_for("127.0.0.1:5000/busybox:1", configs)

    assert (auth.username, auth.password) == ("alice", "one")
    # containerd compares this URL's host with the registry's
    assert auth.server_address == "https://127.0.0.1:5000"


def test_docker_hub_keys_match_docker_hub_images() -> None:
    configs = [{"auths": {"https://index.docker.io/v1/": {"auth": _auth("hub", "pw")}}}]

    [auth] = registryauth.credentials_for("busybox", configs)

    assert auth.username == "hub"
    assert auth.server_address == "https://registry-1.docker.io"
    assert registryauth.credentials_for("quay.io/busybox", configs) == []


def test_more_specific_keys_come_first_and_globs_match_one_label() -> None:
    configs = [
        {"auths": {"*.example.com": {"auth": _auth("any", "1")}}},
        {"auths": {"registry.example.com/team": {"auth": _auth("team", "2")}}},
        {"auths": {"registry.example.com/other": {"auth": _auth("other", "3")}}},
    ]

    found = registryauth.credentials_for("registry.example.com/team/app:1", configs)

    assert [a.username for a in found] == ["team", "any"]
    assert registryauth.credentials_for("a.b.example.com/app", configs) == []


def test_malformed_entries_are_skipped() -> None:
    configs: list[Any] = [
        {"auths": {"127.0.0.1:5000": {"auth": "%%%"}}},
        {"auths": {"127.0.0.1:5000": "not a mapping"}},
        {"auths": {"127.0.0.1:5000": {}}},
        {"nothing": True},
        {"auths": {"127.0.0.1:5000": {"auth": _auth("ok", "pw")}}},
    ]

    found = registryauth.credentials_for("127.0.0.1:5000/app", configs)

    assert [a.username for a in found] == ["ok"]
    assert registryauth.credentials_for("NOT/Valid", configs) == []
