"""The watch cache keeps one decoded copy per live object and shares it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from nodeless.apiserver import watchcache
from nodeless.storage import backends, memory

KEY = "/registry/core/pods/default/p"


def pod(phase: str) -> bytes:
    managed = [{"manager": "m", "operation": "Update", "fieldsV1": {"f:status": {"f:phase": {}}}}]
    return orjson.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "managedFields": managed},
            "status": {"phase": phase},
        }
    )


@pytest.fixture
async def cacher() -> AsyncIterator[tuple[memory.MemoryBackend, watchcache.Cacher]]:
    backend = memory.MemoryBackend()
    await backend.start()
    cacher = watchcache.Cacher(backend)
    await cacher.start()
    yield backend, cacher
    await cacher.close()
    await backend.close()


async def test_a_replaced_entry_forgets_its_decoded_form_and_decodes_again_on_replay(
    cacher: tuple[memory.MemoryBackend, watchcache.Cacher],
) -> None:
    backend, cache = cacher
    created = await backend.create(KEY, pod("Pending"))
    await cache.wait_for(created.mod_revision)
    first = cache.cache("core", "pods").objects[KEY]
    updated = await backend.update(KEY, pod("Running"), created.mod_revision)
    await cache.wait_for(updated.mod_revision)
    assert first._obj is None  # only the history holds it now
    # A watch resuming from before the update still sees both versions, whole.
    watcher = cache.cache("core", "pods").watch(KEY, None, 0)
    seen = [watcher.queue.get_nowait() for _ in range(2)]
    events = [item[1] for item in seen if item is not None]
    assert [e.entry.obj["status"]["phase"] for e in events] == ["Pending", "Running"]
    assert events[0].entry.obj["metadata"]["resourceVersion"] == str(created.mod_revision)


async def test_equal_managed_field_sets_are_one_object_across_entries(
    cacher: tuple[memory.MemoryBackend, watchcache.Cacher],
) -> None:
    backend, cache = cacher
    a = await backend.create(KEY, pod("Pending"))
    b = await backend.create(KEY + "2", pod("Pending"))
    await cache.wait_for(max(a.mod_revision, b.mod_revision))
    objects = cache.cache("core", "pods").objects
    fields = [objects[k].obj["metadata"]["managedFields"][0]["fieldsV1"] for k in (KEY, KEY + "2")]
    assert fields[0] is fields[1]


async def test_verify_finds_a_cached_object_someone_changed_in_place(
    cacher: tuple[memory.MemoryBackend, watchcache.Cacher],
) -> None:
    backend, cache = cacher
    created = await backend.create(KEY, pod("Pending"))
    await cache.wait_for(created.mod_revision)
    assert cache.verify() == []
    cache.cache("core", "pods").objects[KEY].obj["status"]["phase"] = "Scribbled"
    assert cache.verify() == [KEY]


async def test_the_event_of_a_handed_over_write_keeps_the_writers_object(
    cacher: tuple[memory.MemoryBackend, watchcache.Cacher],
) -> None:
    backend, cache = cacher
    data = pod("Pending")
    obj = orjson.loads(data)
    cache.hand_over(KEY, data, obj)
    created = await backend.create(KEY, data)
    await cache.wait_for(created.mod_revision)
    entry = cache.cache("core", "pods").objects[KEY]
    # no second decode: the writer's object, with the write's resourceVersion
    assert entry.obj is obj
    assert obj["metadata"]["resourceVersion"] == str(created.mod_revision)
    assert orjson.loads(entry.raw) == obj
    assert cache.verify() == []


async def test_a_write_of_other_bytes_is_decoded_and_a_failed_hand_over_is_forgotten(
    cacher: tuple[memory.MemoryBackend, watchcache.Cacher],
) -> None:
    backend, cache = cacher
    handed = pod("Pending")
    cache.hand_over(KEY, handed, orjson.loads(handed))
    # another write of the key, with its own bytes, comes first: it is decoded,
    # and what was handed over is dropped (a write in flight costs a decode)
    created = await backend.create(KEY, pod("Running"))
    await cache.wait_for(created.mod_revision)
    assert cache.cache("core", "pods").objects[KEY].obj["status"]["phase"] == "Running"
    assert cache._handed == {}
    # a write that fails takes back what it handed over
    again = pod("Failed")
    cache.hand_over(KEY, again, orjson.loads(again))
    cache.take_back(KEY, again)
    assert cache._handed == {}


async def test_a_field_set_handed_over_again_is_shared_without_a_new_digest(
    cacher: tuple[memory.MemoryBackend, watchcache.Cacher], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, cache = cacher
    encoded = {"f:status": {"f:phase": {}, "f:reason": {}}}  # what the store reuses

    async def write(name: str, phase: str) -> dict[str, Any]:
        data = pod(phase)
        obj = orjson.loads(data)
        obj["metadata"]["managedFields"][0]["fieldsV1"] = encoded
        with cache.handing_over(name, data, obj):
            created = await backend.create(name, data)
        await cache.wait_for(created.mod_revision)
        fields: dict[str, Any] = (
            cache.cache("core", "pods")
            .objects[name]
            .obj["metadata"]["managedFields"][0]["fieldsV1"]
        )
        return fields

    first = await write(KEY, "Pending")

    def no_digest(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a known field set was digested again")

    monkeypatch.setattr(watchcache.hashlib, "blake2b", no_digest)
    second = await write(KEY + "2", "Running")
    assert second is first
    assert first == encoded


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"a": [1, True]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}},
        {"metadata": {"name": "first"}, "kind": "Thing"},
        {"kind": "Thing", "spec": {"x": "é\\"}, "metadata": {"name": "late", "labels": {"a": "b"}}},
    ],
    ids=["usual", "empty-metadata", "metadata-first", "metadata-late"],
)
def test_a_cached_entrys_json_is_its_object_with_its_resource_version(obj: dict[str, Any]) -> None:
    kv = backends.KeyValue("/registry/core/pods/ns/p", orjson.dumps(obj), 7, 9)
    entry = watchcache.adopt(kv, orjson.loads(kv.value))
    assert orjson.loads(entry.raw) == {
        **obj,
        "metadata": {**obj["metadata"], "resourceVersion": "9"},
    }
    assert entry.obj["metadata"]["resourceVersion"] == "9"


def test_bytes_that_are_not_the_objects_are_encoded_again() -> None:
    obj = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}}
    involved = {**obj, "involvedObject": {"resourceVersion": "3"}}
    assert (
        watchcache.with_resource_version(orjson.dumps(obj), {"kind": "Other", **obj}, "1") is None
    )
    assert watchcache.with_resource_version(orjson.dumps(involved), involved, "1") is None
    assert watchcache.with_resource_version(b"{}", {"apiVersion": "v1"}, "1") is None
