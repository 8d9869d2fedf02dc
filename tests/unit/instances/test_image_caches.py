"""ImageCache on the simulated provider and a fake clock: images are pulled
ahead (the pull latency is spent once), pods asking for a cache get the
matched one written back and start without pulling, caches expire, and bad
manifests get 422 naming the field."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless import clocks
from nodeless.api import errors
from nodeless.client import clients
from nodeless.instances import imagecaches
from nodeless.instances.providers import simulated
from tests.unit.scheduler import Cluster, annotation, phase_of, pod_manifest, wait_for

T0 = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)
CACHES = imagecaches.REFS["nodeless.dev"]
ECI_CACHES = imagecaches.REFS["eci.alibabacloud.com"]
PULL = 30.0


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Cluster, imagecaches.ImageCacheController]]:
    clock = clocks.FakeClock(T0)
    provider = simulated.SimulatedProvider(clock, pull_latency=PULL)
    cluster = await Cluster(clock=clock, provider=provider).start()
    controller = imagecaches.ImageCacheController(cluster.client, provider, clock=clock)
    await controller.start()
    try:
        yield cluster, controller
    finally:
        await controller.stop()
        await cluster.stop()


def cache(ref: clients.ResourceRef, name: str, *images: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{ref.group}/{ref.version}",
        "kind": "ImageCache",
        "metadata": {"name": name},
        "spec": {"images": list(images), **spec},
    }


async def phase(cluster: Cluster, ref: clients.ResourceRef, name: str, want: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        obj = await cluster.client.get(ref, "", name)
        return obj if (obj.get("status") or {}).get("phase") == want else None

    result: dict[str, Any] = await wait_for(check, what=f"{name} {want}")
    return result


@pytest.mark.parametrize("ref", [CACHES, ECI_CACHES])
async def test_a_cache_pulls_its_images_once_and_pods_using_it_skip_the_pull(
    cluster: tuple[Cluster, imagecaches.ImageCacheController], ref: clients.ResourceRef
) -> None:
    c, _ = cluster
    await c.client.create(
        ref, cache(ref, "app", "registry.local/app:1", "busybox:1.36", retentionDays=7)
    )
    creating = await phase(c, ref, "app", "Creating")
    assert creating["status"]["progress"] == "0/2"
    await c.clock.advance(PULL)
    await c.clock.advance(PULL)
    ready = await phase(c, ref, "app", "Ready")
    status = ready["status"]
    assert status["progress"] == "2/2"
    assert [i["image"] for i in status["images"]] == ["registry.local/app:1", "busybox:1.36"]
    assert status["expireDateTime"] == "2026-03-08T00:00:00Z"

    # auto: the cache is matched and written back; the pod does not wait for a pull.
    auto = pod_manifest("fast", annotations={"k8s.aliyun.com/eci-auto-imc": "true"})
    auto["spec"]["containers"][0]["image"] = "registry.local/app:1"
    await c.create_pod(auto)
    pod = await c.wait_phase("fast", "Running")
    assert annotation(pod, "nodeless.dev/matched-image-cache") == "app"
    assert annotation(pod, "k8s.aliyun.com/eci-matched-image-cache") == "app"
    # A pod whose image is in no cache gets no match and pulls.
    other = pod_manifest("slow", annotations={"nodeless.dev/image-cache": "auto"})
    other["spec"]["containers"][0]["image"] = "registry.local/other:1"
    await c.create_pod(other)
    await c.settle()
    pod = await c.must_pod("slow")
    assert annotation(pod, "nodeless.dev/matched-image-cache") is None
    assert phase_of(pod) == "Pending"
    await c.clock.advance(PULL)
    await c.wait_phase("slow", "Running")


async def test_a_cache_expires_after_its_retention(
    cluster: tuple[Cluster, imagecaches.ImageCacheController],
) -> None:
    c, _ = cluster
    await c.client.create(CACHES, cache(CACHES, "short", "busybox:1.36", retentionDays=1))
    await c.clock.advance(PULL)
    await phase(c, CACHES, "short", "Ready")
    await c.clock.advance(86400)
    await phase(c, CACHES, "short", "Expired")
    named = pod_manifest("late", annotations={"nodeless.dev/image-cache": "short"})
    await c.create_pod(named)
    await c.settle()
    assert annotation(await c.must_pod("late"), "nodeless.dev/matched-image-cache") is None


def image_pod(name: str, image: str) -> dict[str, Any]:
    pod = pod_manifest(name)
    pod["spec"]["containers"][0]["image"] = image
    return pod


async def test_an_expired_or_deleted_cache_removes_the_images_nothing_else_holds(
    cluster: tuple[Cluster, imagecaches.ImageCacheController],
) -> None:
    c, _ = cluster
    images = ("registry.local/app:1", "registry.local/shared:1", "registry.local/used:1")
    await c.client.create(CACHES, cache(CACHES, "short", *images, retentionDays=1))
    for _ in images:
        await c.clock.advance(PULL)
    await phase(c, CACHES, "short", "Ready")
    await c.client.create(CACHES, cache(CACHES, "long", images[1], retentionDays=7))
    await phase(c, CACHES, "long", "Ready")  # already pulled: no wait
    await c.create_pod(image_pod("user", images[2]))
    await c.wait_phase("user", "Running")

    await c.clock.advance(86400)
    expired = await phase(c, CACHES, "short", "Expired")
    await c.create_pod(image_pod("app", images[0]))
    await c.create_pod(image_pod("shared", images[1]))
    await c.settle()
    pulling = phase_of(await c.must_pod("app"))
    await c.wait_phase("shared", "Running")
    await c.client.delete(CACHES, "", "long")
    await c.settle()
    await c.create_pod(image_pod("shared-later", images[1]))
    await c.settle()
    pulling_later = phase_of(await c.must_pod("shared-later"))

    # app: in no other cache and no pod; shared: in "long"; used: a pod runs it
    assert expired["status"]["message"] == "expired: 1 of 3 image(s) removed"
    assert pulling == "Pending"
    assert pulling_later == "Pending"
    await c.clock.advance(PULL)
    await c.wait_phase("app", "Running")
    await c.wait_phase("shared-later", "Running")


async def test_bad_caches_are_refused_naming_the_field(
    cluster: tuple[Cluster, imagecaches.ImageCacheController],
) -> None:
    c, _ = cluster
    cases = [
        (cache(CACHES, "bad", "busybox:1.36", "Not/Valid:ref"), "spec.images[1]"),
        (cache(CACHES, "bad"), "spec.images"),
        (cache(CACHES, "bad", "busybox", imagePullSecrets=["nocolon"]), "spec.imagePullSecrets[0]"),
        (cache(CACHES, "bad", "busybox", retentionDays=-1), "spec.retentionDays"),
        (cache(ECI_CACHES, "bad", "busybox:bad!tag"), "spec.images[0]"),
    ]
    for body, field in cases:
        ref = ECI_CACHES if body["apiVersion"].startswith("eci") else CACHES
        with pytest.raises(errors.StatusError) as caught:
            await c.client.create(ref, body)
        assert caught.value.code == 422
        assert [cause["field"] for cause in caught.value.to_status()["details"]["causes"]] == [
            field
        ]
