"""The ImageCache controller: pulls a cache's images through the provider
(containerd's content store for real pods; the simulated provider's cache
for simulated ones) so that pods using them start without pulling.

A sync of one ImageCache (either group of ``api.imagecaches.GROUPS``):

- past its ``retentionDays`` it is ``Expired`` and matches no pod any more,
  and its images are removed from the runtime (``release``);
- when its images are what was last pulled and it is Ready, nothing to do
  (it is looked at again when it expires);
- otherwise it is ``Creating``: its pull secrets (``namespace:secret``) are
  read, the images are pulled one by one with ``progress`` written after
  each, and it ends ``Ready`` (with ``expireDateTime``), or ``Failed`` with
  the provider's message and a Warning event (the sync does not retry a
  failed pull by itself: changing the cache, or deleting and creating it,
  tries again, as on ECI).

Released images (of an Expired cache, or of one deleted) are removed through
the provider, except those another live cache holds and those a running
instance uses (the provider keeps those, as image garbage collection keeps
images in use). A cache deleted while the controller was down leaves its
images behind.

Pods opt in with ``nodeless.dev/image-cache: auto`` or a cache's name (and
ECI's aliases); the scheduler writes the cache it matched back as
``nodeless.dev/matched-image-cache``.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

from nodeless import clocks
from nodeless.api import errors, imagecaches, times
from nodeless.client import clients, controllers, events, informers
from nodeless.instances.providers import base
from nodeless.instances.providers.cri import registryauth
from nodeless.serverless import billing

log = logging.getLogger(__name__)

REFS = {
    group: clients.ResourceRef(group, version, "imagecaches", False, imagecaches.KIND)
    for group, version in imagecaches.GROUPS.items()
}
SECRETS = clients.ResourceRef("", "v1", "secrets", True, "Secret")

Obj = dict[str, Any]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


class ImageCacheController:
    def __init__(
        self,
        client: clients.ApiClient,
        provider: base.ImagePuller,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
    ) -> None:
        self.client = client
        self.provider = provider
        self.clock = clock or clocks.SystemClock()
        self.recorder = recorder
        self.factory = informers.InformerFactory(client, clock=self.clock)
        self.caches = {group: self.factory.informer(ref) for group, ref in REFS.items()}
        self.controller = controllers.Controller(
            "imagecaches", self.sync, workers=workers, clock=self.clock
        )
        # What each cache last finished pulling (our status writes may reach
        # the informer after the sync they trigger).
        self._finished: dict[str, list[str]] = {}

    async def start(self) -> None:
        for group, informer in self.caches.items():

            def key_for(obj: clients.Object, group: str = group) -> str | None:
                return f"{group}/{_meta(obj).get('name', '')}"

            self.controller.enqueue_changes(informer, key_for)
        self.factory.start()
        self.controller.start(list(self.caches.values()))

    async def stop(self) -> None:
        await self.controller.stop()
        await self.factory.stop()

    async def sync(self, key: str) -> None:
        group, _, name = key.partition("/")
        obj = self.caches[group].get(name)
        if obj is None or _meta(obj).get("deletionTimestamp"):
            await self.release(key, self._finished.pop(key, []))
            return
        status = obj.get("status") or {}
        now = self.clock.now()
        created = billing.parse_time(_meta(obj).get("creationTimestamp")) or now
        expires = imagecaches.expires_at(obj, created)
        pulled = [str(i.get("image")) for i in status.get("images") or () if isinstance(i, Mapping)]
        if expires is not None and now >= expires:
            if status.get("phase") != imagecaches.EXPIRED:
                removed = await self.release(key, pulled or self._finished.get(key, []))
                message = f"expired: {len(removed)} of {len(pulled)} image(s) removed"
                await self._write(
                    group,
                    obj,
                    {
                        "phase": imagecaches.EXPIRED,
                        "lastUpdatedTime": times.rfc3339(now),
                        "message": message,
                    },
                )
                if self.recorder is not None:
                    self.recorder.record(dict(obj), "Normal", "ImageCacheExpired", message)
            self._finished.pop(key, None)
            return
        wanted = imagecaches.images(obj)
        if self._finished.get(key) == wanted:
            return
        if status.get("phase") in (imagecaches.READY, imagecaches.FAILED) and pulled == wanted:
            if status.get("phase") == imagecaches.READY:
                self._finished[key] = wanted  # known again after a restart, for release
            if expires is not None:
                self.controller.queue.add_after(key, (expires - now).total_seconds())
            return
        if status.get("phase") == imagecaches.FAILED and status.get("failedImages") == wanted:
            return
        await self._pull_all(group, key, obj, wanted, expires)

    async def _pull_all(
        self,
        group: str,
        key: str,
        obj: Mapping[str, Any],
        wanted: list[str],
        expires: datetime.datetime | None,
    ) -> None:
        started = times.rfc3339(self.clock.now())
        total = len(wanted)
        await self._write(
            group,
            obj,
            {
                "phase": imagecaches.CREATING,
                "progress": f"0/{total}",
                "startTime": started,
                "images": [],
            },
        )
        credentials = await self._credentials(obj)
        done: list[Obj] = []
        for image in wanted:
            try:
                resolved = await self.provider.pull_image(image, credentials)
            except base.ProviderError as err:
                message = f"pulling {image} failed: {err}"
                await self._write(
                    group,
                    obj,
                    {
                        "phase": imagecaches.FAILED,
                        "message": message,
                        "failedImages": wanted,
                        "lastUpdatedTime": times.rfc3339(self.clock.now()),
                    },
                )
                if self.recorder is not None:
                    self.recorder.record(dict(obj), "Warning", "ImageCacheFailed", message)
                self._finished[key] = wanted
                return
            done.append({"image": image, "imageID": resolved})
            await self._write(group, obj, {"progress": f"{len(done)}/{total}", "images": done})
        ready: Obj = {
            "phase": imagecaches.READY,
            "progress": f"{total}/{total}",
            "images": done,
            "lastUpdatedTime": times.rfc3339(self.clock.now()),
            "message": None,
            "failedImages": None,
        }
        if expires is not None:
            ready["expireDateTime"] = times.rfc3339(expires)
            self.controller.queue.add_after(key, (expires - self.clock.now()).total_seconds())
        await self._write(group, obj, ready)
        self._finished[key] = wanted
        if self.recorder is not None:
            self.recorder.record(
                dict(obj), "Normal", "ImageCacheReady", f"{total} image(s) pulled and cached"
            )

    async def release(self, key: str, images: list[str]) -> list[str]:
        """Removes the images of cache ``key`` that no other live cache
        holds; returns those the provider removed."""
        held: set[str] = set()
        for group, informer in self.caches.items():
            for other in informer.objects():
                other_key = f"{group}/{_meta(other).get('name', '')}"
                phase = (other.get("status") or {}).get("phase")
                if other_key != key and phase != imagecaches.EXPIRED:
                    held.update(imagecaches.images(other))
        removed: list[str] = []
        for image in images:
            if image in held:
                continue
            try:
                if await self.provider.remove_image(image):
                    removed.append(image)
            except base.ProviderError as err:
                log.warning("image cache %s: %s", key, err)
        return removed

    async def _credentials(self, obj: Mapping[str, Any]) -> list[Obj]:
        out: list[Obj] = []
        for namespace, name in imagecaches.pull_secrets(obj):
            try:
                secret = await self.client.get(SECRETS, namespace, name)
                out.append(dict(registryauth.docker_config_from_secret(secret)))
            except (errors.StatusError, registryauth.CredentialsError) as err:
                log.warning(
                    "image cache %s: pull secret %s/%s: %s",
                    _meta(obj).get("name"),
                    namespace,
                    name,
                    err,
                )
        return out

    async def _write(self, group: str, obj: Mapping[str, Any], status: Obj) -> None:
        try:
            await self.client.patch(
                REFS[group], "", str(_meta(obj).get("name") or ""), {"status": status},
                patch_type="merge", subresource="status",
            )  # fmt: skip
        except errors.StatusError as err:
            if err.code != 404:
                raise
