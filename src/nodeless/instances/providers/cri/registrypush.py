"""Pushing an image Nodeless built into an OCI registry, over the Docker Registry v2 API.

Nothing can be pulled from outside on the machines Nodeless targets, so tests
and demos run a registry on 127.0.0.1 and fill it with images built from the
host's busybox (``sandboximages``). A push is the registry's plain HTTP API:
each blob that is not there yet is uploaded (``POST`` an upload, ``PUT`` its
bytes with their digest), then the manifest is put under a tag. Basic
authentication is sent when credentials are given, for registries that
require it.
"""

from __future__ import annotations

import base64

import aiohttp
import yarl

from nodeless.instances.providers.cri import sandboximages


class PushError(Exception):
    """The registry refused part of the push; the message has its answer."""


async def push(
    image: sandboximages.OciImage,
    registry: str,
    repository: str,
    tag: str,
    *,
    username: str = "",
    password: str = "",
    scheme: str = "http",
) -> str:
    """Pushes ``image`` to ``scheme://registry`` as ``repository:tag``;
    returns the manifest's digest (``registry/repository@digest`` pulls it)."""
    base = yarl.URL(f"{scheme}://{registry}")
    headers = {}
    if username or password:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        for blob in (image.layer, image.config):
            await _push_blob(session, base, repository, blob)
        async with session.put(
            base / "v2" / repository / "manifests" / tag,
            data=image.manifest.data,
            headers={"Content-Type": image.manifest.media_type},
        ) as reply:
            await _expect(reply, 201, f"manifest {repository}:{tag}")
            return reply.headers.get("Docker-Content-Digest", image.manifest.digest)


async def _push_blob(
    session: aiohttp.ClientSession, base: yarl.URL, repository: str, blob: sandboximages.Blob
) -> None:
    async with session.head(base / "v2" / repository / "blobs" / blob.digest) as reply:
        if reply.status == 200:
            return
        if reply.status == 401:
            await _expect(reply, 200, f"blob {blob.digest}")
    async with session.post(base.with_path(f"/v2/{repository}/blobs/uploads/")) as reply:
        await _expect(reply, 202, f"upload of {blob.digest}")
        location = reply.headers.get("Location", "")
    if not location:
        raise PushError(f"the registry gave no upload location for {blob.digest}")
    upload = base.join(yarl.URL(location)).update_query(digest=blob.digest)
    async with session.put(
        upload,
        data=blob.data,
        headers={"Content-Type": "application/octet-stream"},
    ) as reply:
        await _expect(reply, 201, f"blob {blob.digest}")


async def _expect(reply: aiohttp.ClientResponse, status: int, what: str) -> None:
    if reply.status != status:
        body = (await reply.text())[:500]
        raise PushError(f"pushing {what}: HTTP {reply.status}: {body}")
