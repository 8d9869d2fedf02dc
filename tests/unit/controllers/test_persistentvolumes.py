"""The PersistentVolume controller (binder, local-path provisioner, reclaimer)
and the PVC/PV protection controllers, on the whole in-process cluster: the
API server bootstraps the default ``local-path`` StorageClass, volumes are
directories under a temporary root, and pods that mount claims really run on
the simulated provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nodeless.client import clients, informers
from nodeless.controllers import persistentvolumes, statefulsets, volumeprotection
from tests.unit.controllers.conftest import Stack

NS = "default"
PVCS = persistentvolumes.CLAIMS
PVS = persistentvolumes.VOLUMES
CLASSES = persistentvolumes.CLASSES
PODS = persistentvolumes.PODS
EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")

Obj = dict[str, Any]


@dataclass
class Volumes:
    """The volume controllers under test, restartable on the same root."""

    stack: Stack
    root: Path
    binder: persistentvolumes.PersistentVolumeController | None = None
    running: list[Any] = field(default_factory=list)
    factory: informers.InformerFactory | None = None

    async def start(self) -> None:
        self.factory = informers.InformerFactory(self.stack.client)
        recorder = self.stack.recorder
        self.binder = persistentvolumes.PersistentVolumeController(
            self.stack.client, self.factory, recorder=recorder, volumes_root=self.root
        )
        self.running = [
            self.binder,
            volumeprotection.PVCProtectionController(
                self.stack.client, self.factory, recorder=recorder
            ),
            volumeprotection.PVProtectionController(
                self.stack.client, self.factory, recorder=recorder
            ),
        ]
        for controller in self.running:
            await controller.start()
        self.factory.start()
        await self.factory.wait_synced()

    async def stop(self) -> None:
        for controller in reversed(self.running):
            await controller.stop()
        if self.factory is not None:
            await self.factory.stop()
        self.running, self.binder, self.factory = [], None, None


@pytest.fixture
async def volumes(stack: Stack, tmp_path: Path) -> AsyncIterator[Volumes]:
    found = Volumes(stack, tmp_path / "volumes")
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


# --- objects and helpers --------------------------------------------------------------


def claim(
    name: str,
    *,
    storage: str = "1Gi",
    modes: tuple[str, ...] = ("ReadWriteOnce",),
    storage_class: str | None = None,
    volume_name: str = "",
) -> Obj:
    spec: Obj = {"accessModes": list(modes), "resources": {"requests": {"storage": storage}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    if volume_name:
        spec["volumeName"] = volume_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def static_volume(
    name: str,
    *,
    storage: str,
    storage_class: str = "manual",
    modes: tuple[str, ...] = ("ReadWriteOnce",),
    policy: str = "Retain",
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": list(modes),
            "storageClassName": storage_class,
            "persistentVolumeReclaimPolicy": policy,
            "hostPath": {"path": f"/srv/{name}"},
        },
    }


def storage_class(name: str, *, policy: str = "Delete", binding: str = "Immediate") -> Obj:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": persistentvolumes.PROVISIONER,
        "reclaimPolicy": policy,
        "volumeBindingMode": binding,
    }


def pod(name: str, claim_name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}],
        },
    }


async def get_claim(stack: Stack, name: str) -> Obj | None:
    found = await stack.client.list(PVCS, NS, field_selector=f"metadata.name={name}")
    return found.items[0] if found.items else None


async def get_volume(stack: Stack, name: str) -> Obj | None:
    found = await stack.client.list(PVS, field_selector=f"metadata.name={name}")
    return found.items[0] if found.items else None


async def wait_claim(stack: Stack, name: str, phase: str) -> Obj:
    async def check() -> Obj | None:
        got = await get_claim(stack, name)
        return got if got is not None and got["status"].get("phase") == phase else None

    found: Obj = await stack.wait_for(check)
    return found


async def wait_volume(stack: Stack, name: str, phase: str) -> Obj:
    async def check() -> Obj | None:
        got = await get_volume(stack, name)
        return got if got is not None and got["status"].get("phase") == phase else None

    found: Obj = await stack.wait_for(check)
    return found


async def wait_gone(stack: Stack, resource: clients.ResourceRef, name: str) -> None:
    async def check() -> bool:
        items = (
            await stack.client.list(
                resource, NS if resource.namespaced else "", field_selector=f"metadata.name={name}"
            )
        ).items
        return not items

    await stack.wait_for(check)


async def event_messages(stack: Stack, reason: str, name: str) -> list[str]:
    await stack.recorder.flush()
    items = (await stack.client.list(EVENTS, NS)).items
    return [
        e["message"]
        for e in items
        if e.get("reason") == reason and e["involvedObject"].get("name") == name
    ]


async def wait_event(stack: Stack, reason: str, name: str) -> list[str]:
    async def check() -> list[str]:
        return await event_messages(stack, reason, name)

    found: list[str] = await stack.wait_for(check)
    return found


async def volume_names(stack: Stack) -> list[str]:
    return sorted(v["metadata"]["name"] for v in (await stack.client.list(PVS)).items)


# --- provisioning ----------------------------------------------------------------------


async def test_a_claim_without_a_class_gets_the_default_class_and_a_provisioned_volume(
    stack: Stack, volumes: Volumes
) -> None:
    created = await stack.client.create(PVCS, claim("data", storage="2Gi"))
    uid = created["metadata"]["uid"]

    bound = await wait_claim(stack, "data", "Bound")

    name = f"pvc-{uid}"
    assert bound["spec"]["storageClassName"] == "local-path"
    assert bound["spec"]["volumeName"] == name
    annotations = bound["metadata"]["annotations"]
    assert annotations[persistentvolumes.BIND_COMPLETED] == "yes"
    assert annotations[persistentvolumes.BOUND_BY_CONTROLLER] == "yes"
    assert annotations[persistentvolumes.STORAGE_PROVISIONER] == persistentvolumes.PROVISIONER
    assert bound["status"]["accessModes"] == ["ReadWriteOnce"]
    assert bound["status"]["capacity"] == {"storage": "2Gi"}

    volume = await wait_volume(stack, name, "Bound")
    spec = volume["spec"]
    assert spec["capacity"] == {"storage": "2Gi"}
    assert spec["accessModes"] == ["ReadWriteOnce"]
    assert spec["persistentVolumeReclaimPolicy"] == "Delete"
    assert spec["storageClassName"] == "local-path"
    assert spec["hostPath"] == {"path": str(volumes.root / name), "type": "DirectoryOrCreate"}
    assert (spec["claimRef"]["namespace"], spec["claimRef"]["name"], spec["claimRef"]["uid"]) == (
        NS,
        "data",
        uid,
    )
    assert volume["metadata"]["annotations"][persistentvolumes.PROVISIONED_BY] == (
        persistentvolumes.PROVISIONER
    )
    assert (volumes.root / name).is_dir()
    assert await wait_event(stack, "ProvisioningSucceeded", "data") == [
        f"Successfully provisioned volume {name} using {persistentvolumes.PROVISIONER}"
    ]


async def test_claims_and_volumes_get_their_protection_finalizers(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVCS, claim("data"))
    bound = await wait_claim(stack, "data", "Bound")

    async def protected() -> bool:
        got_claim = await get_claim(stack, "data")
        got_volume = await get_volume(stack, bound["spec"]["volumeName"])
        return (
            got_claim is not None
            and got_volume is not None
            and volumeprotection.PVC_PROTECTION in got_claim["metadata"].get("finalizers", [])
            and volumeprotection.PV_PROTECTION in got_volume["metadata"].get("finalizers", [])
        )

    await stack.wait_for(protected)


async def test_a_claim_of_a_wait_for_first_consumer_class_binds_once_a_pod_uses_it(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(CLASSES, storage_class("lazy", binding="WaitForFirstConsumer"))
    await stack.client.create(PVCS, claim("data", storage_class="lazy"))
    assert await wait_event(stack, "WaitForFirstConsumer", "data") == [
        "waiting for first consumer to be created before binding"
    ]
    assert (await get_claim(stack, "data") or {})["status"]["phase"] == "Pending"
    assert await volume_names(stack) == []

    await stack.client.create(PODS, pod("user", "data"))
    bound = await wait_claim(stack, "data", "Bound")
    assert await volume_names(stack) == [bound["spec"]["volumeName"]]


# --- binding static volumes ------------------------------------------------------------


async def test_a_claim_binds_the_smallest_available_volume_that_fits(
    stack: Stack, volumes: Volumes
) -> None:
    for volume in (
        static_volume("small", storage="1Gi"),
        static_volume("medium", storage="5Gi"),
        static_volume("large", storage="10Gi"),
        static_volume("shared", storage="10Gi", modes=("ReadWriteMany",)),
        static_volume("other-class", storage="2Gi", storage_class="slow"),
    ):
        await stack.client.create(PVS, volume)
    await wait_volume(stack, "small", "Available")

    await stack.client.create(PVCS, claim("db", storage="2Gi", storage_class="manual"))
    await stack.client.create(
        PVCS, claim("web", storage="1Gi", modes=("ReadWriteMany",), storage_class="manual")
    )

    db = await wait_claim(stack, "db", "Bound")
    web = await wait_claim(stack, "web", "Bound")
    assert db["spec"]["volumeName"] == "medium"
    assert db["status"]["capacity"] == {"storage": "5Gi"}
    assert web["spec"]["volumeName"] == "shared"
    assert web["status"]["accessModes"] == ["ReadWriteMany"]
    medium = await wait_volume(stack, "medium", "Bound")
    assert medium["spec"]["claimRef"]["uid"] == db["metadata"]["uid"]
    assert medium["metadata"]["annotations"][persistentvolumes.BOUND_BY_CONTROLLER] == "yes"
    for name in ("small", "large", "other-class"):
        assert (await get_volume(stack, name) or {})["status"]["phase"] == "Available"
    assert await volume_names(stack) == ["large", "medium", "other-class", "shared", "small"]


async def test_claims_created_together_each_get_a_volume_of_their_own(
    stack: Stack, volumes: Volumes
) -> None:
    names = [f"vol-{i}" for i in range(6)]
    for name in names:
        await stack.client.create(PVS, static_volume(name, storage="1Gi"))
    for name in names:
        await wait_volume(stack, name, "Available")

    for i in range(len(names)):
        await stack.client.create(PVCS, claim(f"c-{i}", storage_class="manual"))

    bound = [await wait_claim(stack, f"c-{i}", "Bound") for i in range(len(names))]
    assert sorted(c["spec"]["volumeName"] for c in bound) == names
    for c in bound:
        volume = await wait_volume(stack, c["spec"]["volumeName"], "Bound")
        assert volume["spec"]["claimRef"]["uid"] == c["metadata"]["uid"]


async def test_a_claim_of_an_external_provisioner_waits_for_it(
    stack: Stack, volumes: Volumes
) -> None:
    external = storage_class("ebs")
    external["provisioner"] = "ebs.csi.aws.com"
    await stack.client.create(CLASSES, external)

    await stack.client.create(PVCS, claim("data", storage_class="ebs"))

    [message] = await wait_event(stack, "ExternalProvisioning", "data")
    assert "'ebs.csi.aws.com'" in message
    got = await get_claim(stack, "data")
    assert got is not None and got["status"]["phase"] == "Pending"
    assert got["metadata"]["annotations"][persistentvolumes.STORAGE_PROVISIONER] == (
        "ebs.csi.aws.com"
    )
    assert await volume_names(stack) == []


async def test_a_claim_without_a_class_or_a_fitting_volume_stays_pending(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVS, static_volume("slow-one", storage="5Gi", storage_class="slow"))
    await wait_volume(stack, "slow-one", "Available")

    await stack.client.create(PVCS, claim("data", storage_class=""))

    assert await wait_event(stack, "FailedBinding", "data") == [
        "no persistent volumes available for this claim and no storage class is set"
    ]
    got = await get_claim(stack, "data")
    assert got is not None
    assert got["status"]["phase"] == "Pending"
    assert got["spec"]["storageClassName"] == "", "an explicit empty class is not defaulted"
    assert (await get_volume(stack, "slow-one") or {})["status"]["phase"] == "Available"


async def test_a_claim_of_a_class_without_storage_class_binds_a_volume_created_later(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVCS, claim("data", storage_class="manual"))
    assert await wait_event(stack, "ProvisioningFailed", "data") == [
        'storageclass.storage.k8s.io "manual" not found'
    ]

    await stack.client.create(PVS, static_volume("late", storage="1Gi"))

    bound = await wait_claim(stack, "data", "Bound")
    assert bound["spec"]["volumeName"] == "late"


async def test_a_claim_naming_a_volume_binds_to_it_even_if_a_smaller_one_fits(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVS, static_volume("tiny", storage="1Gi", storage_class=""))
    await stack.client.create(PVS, static_volume("chosen", storage="10Gi", storage_class=""))

    await stack.client.create(PVCS, claim("data", volume_name="chosen"))

    bound = await wait_claim(stack, "data", "Bound")
    assert bound["spec"]["volumeName"] == "chosen"
    assert persistentvolumes.BOUND_BY_CONTROLLER not in bound["metadata"]["annotations"], (
        "the user bound it"
    )
    chosen = await wait_volume(stack, "chosen", "Bound")
    assert chosen["spec"]["claimRef"]["uid"] == bound["metadata"]["uid"]
    assert (await get_volume(stack, "tiny") or {})["status"]["phase"] == "Available"


async def test_a_claim_naming_a_volume_too_small_reports_the_mismatch(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVS, static_volume("tiny", storage="1Gi", storage_class=""))

    await stack.client.create(PVCS, claim("data", storage="5Gi", volume_name="tiny"))

    assert await wait_event(stack, "VolumeMismatch", "data") == [
        'Cannot bind to requested volume "tiny": requested PV is too small'
    ]
    assert (await get_claim(stack, "data") or {})["status"]["phase"] == "Pending"
    assert "claimRef" not in (await get_volume(stack, "tiny") or {})["spec"]


async def test_a_volume_pre_bound_to_a_claim_by_name_binds_only_that_claim(
    stack: Stack, volumes: Volumes
) -> None:
    reserved = static_volume("reserved", storage="1Gi")
    reserved["spec"]["claimRef"] = {"namespace": NS, "name": "owner"}
    await stack.client.create(PVS, reserved)
    await wait_volume(stack, "reserved", "Available")

    await stack.client.create(PVCS, claim("intruder", storage_class="manual"))
    await wait_event(stack, "ProvisioningFailed", "intruder")
    await stack.client.create(PVCS, claim("owner", storage_class="manual"))

    owner = await wait_claim(stack, "owner", "Bound")
    assert owner["spec"]["volumeName"] == "reserved"
    assert (await get_claim(stack, "intruder") or {})["status"]["phase"] == "Pending"


# --- reclaiming ------------------------------------------------------------------------


async def test_deleting_a_claim_deletes_its_provisioned_volume_and_directory(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVCS, claim("data"))
    bound = await wait_claim(stack, "data", "Bound")
    name = bound["spec"]["volumeName"]
    (volumes.root / name / "file").write_text("payload")

    await stack.client.delete(PVCS, NS, "data")

    await wait_gone(stack, PVCS, "data")
    await wait_gone(stack, PVS, name)
    assert not (volumes.root / name).exists()


async def test_a_retained_volume_is_released_and_keeps_its_data(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(CLASSES, storage_class("keep", policy="Retain"))
    await stack.client.create(PVCS, claim("data", storage_class="keep"))
    bound = await wait_claim(stack, "data", "Bound")
    name = bound["spec"]["volumeName"]
    (volumes.root / name / "file").write_text("payload")

    await stack.client.delete(PVCS, NS, "data")

    released = await wait_volume(stack, name, "Released")
    assert released["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert released["spec"]["claimRef"]["uid"] == bound["metadata"]["uid"]
    assert (volumes.root / name / "file").read_text() == "payload"

    # A new claim of the same name does not get the released volume back.
    await stack.client.create(PVCS, claim("data", storage_class="keep"))
    again = await wait_claim(stack, "data", "Bound")
    assert again["spec"]["volumeName"] != name
    assert (await get_volume(stack, name) or {})["status"]["phase"] == "Released"


async def test_a_static_volume_with_delete_policy_fails_instead_of_losing_data(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVS, static_volume("static", storage="1Gi", policy="Delete"))
    await stack.client.create(PVCS, claim("data", storage_class="manual"))
    await wait_claim(stack, "data", "Bound")

    await stack.client.delete(PVCS, NS, "data")

    failed = await wait_volume(stack, "static", "Failed")
    assert "no deletable volume plugin matched" in failed["status"]["message"]
    assert await wait_event(stack, "VolumeFailedDelete", "static")


# --- protection ------------------------------------------------------------------------


async def test_a_claim_a_running_pod_uses_stays_terminating_until_the_pod_is_gone(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVCS, claim("data"))
    bound = await wait_claim(stack, "data", "Bound")
    name = bound["spec"]["volumeName"]

    async def protected() -> bool:
        got = await get_claim(stack, "data")
        return got is not None and volumeprotection.PVC_PROTECTION in (
            got["metadata"].get("finalizers") or []
        )

    await stack.wait_for(protected)
    await stack.client.create(PODS, pod("user", "data"))

    async def running() -> bool:
        got = await stack.client.get(PODS, NS, "user")
        return (got.get("status") or {}).get("phase") == "Running"

    await stack.wait_for(running)

    await stack.client.delete(PVCS, NS, "data")
    protection = next(
        c for c in volumes.running if isinstance(c, volumeprotection.PVCProtectionController)
    )

    async def seen_deleted() -> bool:
        cached = protection.objects.get(f"{NS}/data")
        return cached is not None and bool(cached["metadata"].get("deletionTimestamp"))

    await stack.wait_for(seen_deleted)
    await protection.sync(f"{NS}/data")  # what the controller does with it, done now

    terminating = await get_claim(stack, "data")
    assert terminating is not None
    assert terminating["metadata"].get("deletionTimestamp")
    assert terminating["status"]["phase"] == "Bound"
    assert (await get_volume(stack, name) or {})["status"]["phase"] == "Bound"

    await stack.client.delete(PODS, NS, "user")

    await wait_gone(stack, PVCS, "data")
    await wait_gone(stack, PVS, name)
    assert not (volumes.root / name).exists()


async def test_a_bound_volume_stays_terminating_until_its_claim_is_gone(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVS, static_volume("static", storage="1Gi"))
    await stack.client.create(PVCS, claim("data", storage_class="manual"))
    await wait_claim(stack, "data", "Bound")

    async def protected() -> bool:
        got = await get_volume(stack, "static")
        return got is not None and volumeprotection.PV_PROTECTION in (
            got["metadata"].get("finalizers") or []
        )

    await stack.wait_for(protected)
    await stack.client.delete(PVS, "", "static")
    protection = next(
        c for c in volumes.running if isinstance(c, volumeprotection.PVProtectionController)
    )

    async def seen_deleted() -> bool:
        cached = protection.objects.get("static")
        return cached is not None and bool(cached["metadata"].get("deletionTimestamp"))

    await stack.wait_for(seen_deleted)
    await protection.sync("static")

    terminating = await get_volume(stack, "static")
    assert terminating is not None and terminating["metadata"].get("deletionTimestamp")
    assert (await get_claim(stack, "data") or {})["status"]["phase"] == "Bound"

    await stack.client.delete(PVCS, NS, "data")

    await wait_gone(stack, PVS, "static")


# --- statefulsets and restarts ---------------------------------------------------------


async def test_statefulset_claim_templates_get_bound_provisioned_volumes(
    stack: Stack, volumes: Volumes
) -> None:
    factory = informers.InformerFactory(stack.client)
    sets = statefulsets.StatefulSetController(stack.client, factory, recorder=stack.recorder)
    await sets.start()
    factory.start()
    try:
        await stack.client.create(
            statefulsets.STATEFULSETS,
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": NS},
                "spec": {
                    "serviceName": "db",
                    "replicas": 2,
                    "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": {"app": "db"}},
                    "template": {
                        "metadata": {"labels": {"app": "db"}},
                        "spec": {
                            "containers": [
                                {"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}
                            ]
                        },
                    },
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "data"},
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": "1Gi"}},
                            },
                        }
                    ],
                },
            },
        )
        first = await wait_claim(stack, "data-db-0", "Bound")
        second = await wait_claim(stack, "data-db-1", "Bound")
    finally:
        await sets.stop()
        await factory.stop()

    names = [first["spec"]["volumeName"], second["spec"]["volumeName"]]
    assert sorted(names) == await volume_names(stack)
    assert all((volumes.root / name).is_dir() for name in names)


async def test_a_restarted_controller_finds_its_volumes_instead_of_provisioning_again(
    stack: Stack, volumes: Volumes
) -> None:
    await stack.client.create(PVCS, claim("data"))
    bound = await wait_claim(stack, "data", "Bound")
    await volumes.stop()

    await volumes.start()
    assert volumes.binder is not None
    await volumes.binder.sync_claim(f"{NS}/data")
    await volumes.binder.sync_volume(bound["spec"]["volumeName"])

    assert await volume_names(stack) == [bound["spec"]["volumeName"]]
    after = await get_claim(stack, "data")
    assert after is not None
    assert after["status"]["phase"] == "Bound"
    assert after["spec"]["volumeName"] == bound["spec"]["volumeName"]


async def test_a_volume_provisioned_before_a_crash_is_bound_not_made_again(
    stack: Stack, volumes: Volumes
) -> None:
    await volumes.stop()
    created = await stack.client.create(PVCS, claim("data"))
    uid = created["metadata"]["uid"]
    # What a crash between creating the PV and binding the claim leaves behind.
    made = static_volume(f"pvc-{uid}", storage="1Gi", storage_class="", policy="Delete")
    made["metadata"]["annotations"] = {
        persistentvolumes.PROVISIONED_BY: persistentvolumes.PROVISIONER,
        persistentvolumes.BOUND_BY_CONTROLLER: "yes",
    }
    made["spec"]["storageClassName"] = "local-path"
    made["spec"]["hostPath"] = {"path": str(volumes.root / f"pvc-{uid}")}
    made["spec"]["claimRef"] = {
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": NS,
        "name": "data",
        "uid": uid,
    }
    await stack.client.create(PVS, made)

    await volumes.start()

    bound = await wait_claim(stack, "data", "Bound")
    assert bound["spec"]["volumeName"] == f"pvc-{uid}"
    assert await volume_names(stack) == [f"pvc-{uid}"]
    assert await event_messages(stack, "ProvisioningSucceeded", "data") == []
