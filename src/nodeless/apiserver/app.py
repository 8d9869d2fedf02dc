"""Assembling and running the API server: TLS, authentication, bootstrap objects,
custom resource definitions, and the aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nodeless.api import elasticworkloads, errors, imagecaches, kinds, knativeserving
from nodeless.apiserver import (
    admitting,
    certificates,
    crds,
    endpoints,
    serviceaccounts,
    serviceips,
    storing,
    watchcache,
)
from nodeless.instances.providers.cri import imagerefs
from nodeless.serverless import catalogue
from nodeless.storage import backends

log = logging.getLogger(__name__)

DEFAULT_ZONES = ("zone-a",)
BOOTSTRAP_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
HEALTH_PATHS = ("/livez", "/readyz", "/healthz")


def _image_reference_problem(reference: str) -> str | None:
    """Why an image reference is not one Docker or containerd would pull."""
    try:
        imagerefs.parse(reference)
    except imagerefs.InvalidImageName as err:
        return str(err)
    return None


@dataclass
class Authenticator:
    """Bearer tokens from the static token file, or client certificates signed by our CA."""

    tokens: dict[str, certificates.TokenUser] = field(default_factory=dict)
    issuer: serviceaccounts.TokenIssuer | None = None
    clock: storing.Clock = storing.utc_now

    def authenticate_token(self, token: str) -> endpoints.User | None:
        found = self.tokens.get(token)
        if found is not None:
            return endpoints.User(found.name, found.uid, (*found.groups, "system:authenticated"))
        if self.issuer is not None:
            identity = self.issuer.verify(token, self.clock())
            if identity is not None:
                groups = (*identity.groups, "system:authenticated")
                return endpoints.User(identity.name, identity.uid, groups)
        return None

    def authenticate(self, request: web.Request) -> endpoints.User | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.authenticate_token(header[7:].strip())
        transport = request.transport
        if transport is None:
            return None
        cert = transport.get_extra_info("peercert")
        if not cert:
            return None
        cn, orgs = "", []
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    cn = value
                elif key == "organizationName":
                    orgs.append(value)
        if not cn:
            return None
        return endpoints.User(cn, "", (*orgs, "system:authenticated"))


def build_app(api: endpoints.Api, authenticator: Authenticator | None) -> web.Application:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in HEALTH_PATHS or request.path.startswith(
            tuple(p + "/" for p in HEALTH_PATHS)
        ):
            return web.Response(text="ok", content_type="text/plain")
        if authenticator is not None:
            user = authenticator.authenticate(request)
            if user is None:
                return endpoints.status_response(errors.unauthorized())
        else:
            user = endpoints.User("admin", "", ("system:masters", "system:authenticated"))
        request[endpoints.USER_KEY] = user
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except errors.StatusError as err:
            return endpoints.status_response(err)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("internal error serving %s %s", request.method, request.path)
            return endpoints.status_response(errors.internal(str(exc)))

    app = web.Application(middlewares=[middleware], client_max_size=4 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", api.handle)
    return app


class ApiServer:
    """One running API server over a backend; `start` then `stop`."""

    def __init__(
        self,
        backend: backends.Backend,
        *,
        host: str = "127.0.0.1",
        port: int = 6443,
        pki_dir: Path | None = None,
        tls: bool = True,
        clock: storing.Clock = storing.utc_now,
        zones: Sequence[str] = DEFAULT_ZONES,
        specs: catalogue.Catalogue | None = None,
        service_cidr: str = serviceips.DEFAULT_SERVICE_CIDR,
    ) -> None:
        self.backend = backend
        self.host = host
        self.port = port
        self.pki_dir = pki_dir
        self.tls = tls
        self.registry = kinds.Registry()
        self.cacher = watchcache.Cacher(backend)
        self.store = storing.Store(backend, self.cacher, self.registry, clock)
        self.api = endpoints.Api(self.store, self.registry)
        self.zones = list(zones)
        self.catalogue = specs or catalogue.Catalogue.load()
        self.store.admitters.append(admitting.serverless(self.catalogue, self.zones))
        self.store.admitters.append(admitting.knative_serving)
        self.store.admitters.append(admitting.elastic_workloads(self._cached))
        self.store.admitters.append(admitting.image_caches(_image_reference_problem))
        self.store.admitters.append(
            admitting.service_accounts(
                lambda ns, name: self._cached("", "v1", "ServiceAccount", ns, name),
                lambda: self.pki is not None,
            )
        )
        self.service_ips = serviceips.ServiceIPs(self.store, service_cidr)
        self.store.allocators[("", "Service")] = self.service_ips
        self.pki: certificates.Pki | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.crds = crds.CrdManager(self.store, self.api)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        await self.backend.start()
        await self.cacher.start()
        self.store.after_create.append(self._after_create)
        self.crds.attach()
        await self.crds.load_existing()
        await self._bootstrap()
        # Before serving: no create can be between its two writes yet.
        await self.service_ips.repair()
        ssl_context: ssl.SSLContext | None = None
        authenticator: Authenticator | None = None
        if self.tls:
            assert self.pki_dir is not None
            # In-cluster clients dial the kubernetes Service's ClusterIP.
            self.pki = certificates.ensure(self.pki_dir, [self.host, self.service_ips.address(1)])
            ssl_context = certificates.server_context(self.pki)
            self.api.tokens = serviceaccounts.TokenIssuer.from_dir(self.pki_dir)
            authenticator = Authenticator(
                certificates.read_tokens(self.pki), self.api.tokens, self.store.clock
            )
            self.api.token_reviewer = authenticator.authenticate_token
        app = build_app(self.api, authenticator)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=ssl_context, backlog=1024
        )
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        self.api.address = f"{self.host}:{self.port}"
        namespaces = self.registry.by_kind("", "v1", "Namespace")
        assert namespaces is not None
        for entry in list(self.store.cache(namespaces).objects.values()):
            await self._publish_root_ca(entry.obj["metadata"]["name"])
        await self._kubernetes_service()
        await self.service_ips.ensure_service_cidr()

    async def stop(self) -> None:
        self.api.shutting_down.set()
        # Open watches end first, so the HTTP server's shutdown does not wait on them.
        self.cacher.close_watchers()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        await self.cacher.close()
        await self.backend.close()

    async def _bootstrap(self) -> None:
        """Objects every client assumes: the four namespaces, each with its default
        ServiceAccount, and the default StorageClass."""
        ns = self.registry.by_kind("", "v1", "Namespace")
        assert ns is not None
        for name in BOOTSTRAP_NAMESPACES:
            with contextlib.suppress(errors.StatusError):
                await self.store.create(
                    ns,
                    "",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                    storing.WriteOptions(manager="nodeless"),
                )
            await self._ensure_service_account(name)
        await self._default_storage_class()
        await self._bundled_crds()

    async def _default_storage_class(self) -> None:
        """The ``local-path`` StorageClass, the cluster's default, served by the
        controller manager's local-path provisioner (directories under the data
        dir). Created when missing, never overwritten: a user may change it."""
        storage_class = self.registry.by_kind("storage.k8s.io", "v1", "StorageClass")
        assert storage_class is not None
        if await self.store.get_stored(storage_class, "", "local-path") is not None:
            return
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "local-path",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "nodeless.dev/local-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        with contextlib.suppress(errors.StatusError):
            await self.store.create(
                storage_class, "", body, storing.WriteOptions(manager="nodeless")
            )

    async def _bundled_crds(self) -> None:
        """The CustomResourceDefinitions Nodeless serves itself (Knative
        Serving's Service and Revision, ElasticWorkload, ECI's ImageCache): created when missing, and brought up
        to date when an older Nodeless installed them; established before the
        API serves, so every component can watch them from the start."""
        crd_kind = self.registry.by_kind(crds.CRD_GROUP, "v1", "CustomResourceDefinition")
        assert crd_kind is not None
        options = storing.WriteOptions(manager="nodeless")
        wanted = knativeserving.crds() + elasticworkloads.crds() + imagecaches.crds()
        for crd in wanted:
            name = crd["metadata"]["name"]
            entry = await self.store.get_stored(crd_kind, "", name)
            if entry is None:
                with contextlib.suppress(errors.StatusError):
                    await self.store.create(crd_kind, "", crd, options)
                continue
            current = entry.obj
            labels = current["metadata"].get("labels") or {}
            ours = labels.get("app.kubernetes.io/managed-by") == "nodeless"
            if ours and current.get("spec") != crd["spec"]:
                updated = {**current, "spec": crd["spec"], "metadata": {**current["metadata"]}}
                updated["metadata"]["labels"] = crd["metadata"]["labels"]
                updated["metadata"].pop("resourceVersion", None)

                def replace(
                    _current: dict[str, Any] | None, new: dict[str, Any] = updated
                ) -> dict[str, Any]:
                    return new

                with contextlib.suppress(errors.StatusError):
                    await self.store.update(crd_kind, "", name, replace, options)
        # The registry learns of a CRD from the watch cache's event.
        for _ in range(500):
            if all(
                self.registry.lookup(
                    c["spec"]["group"],
                    c["spec"]["versions"][0]["name"],
                    c["spec"]["names"]["plural"],
                )
                for c in wanted
            ):
                return
            await asyncio.sleep(0.01)
        log.warning("bundled CRDs were not served within 5 s")

    async def _kubernetes_service(self) -> None:
        """The ``kubernetes`` Service in ``default`` and its Endpoints, pointing at
        this API server, as every cluster has them (the first address of the
        service range is reserved for it)."""
        service = self.registry.by_kind("", "v1", "Service")
        endpoints_kind = self.registry.by_kind("", "v1", "Endpoints")
        assert service is not None and endpoints_kind is not None
        address = "127.0.0.1" if self.host in ("0.0.0.0", "::", "localhost") else self.host
        options = storing.WriteOptions(manager="kube-apiserver")
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kubernetes",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.service_ips.address(1),
                "clusterIPs": [self.service_ips.address(1)],
                "ports": [
                    {"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.port}
                ],
                "sessionAffinity": "None",
            },
        }
        if await self.store.get_stored(service, "default", "kubernetes") is None:
            with contextlib.suppress(errors.StatusError):
                await self.store.create(service, "default", body, options)
        subsets = [
            {
                "addresses": [{"ip": address}],
                "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
            }
        ]
        current = await self.store.get_stored(endpoints_kind, "default", "kubernetes")
        if current is None:
            eps = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "kubernetes"},
                "subsets": subsets,
            }
            with contextlib.suppress(errors.StatusError):
                await self.store.create(endpoints_kind, "default", eps, options)
        elif current.obj.get("subsets") != subsets:

            def point_here(obj: dict[str, Any] | None) -> dict[str, Any]:
                assert obj is not None
                obj["subsets"] = subsets
                obj["metadata"].pop("resourceVersion", None)
                return obj

            with contextlib.suppress(errors.StatusError):
                await self.store.update(
                    endpoints_kind, "default", "kubernetes", point_here, options
                )

    async def _after_create(self, resource: kinds.Resource, obj: dict[str, Any]) -> None:
        if resource.group == "" and resource.kind == "Namespace":
            await self._ensure_service_account(obj["metadata"]["name"])
            await self._publish_root_ca(obj["metadata"]["name"])

    def _cached(
        self, group: str, version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """An object from the watch cache (admission reads without awaiting)."""
        resource = self.registry.by_kind(group, version, kind)
        if resource is None:
            return None
        entry = self.store.cache(resource).objects.get(self.store.key(resource, namespace, name))
        return entry.obj if entry is not None else None

    async def _publish_root_ca(self, namespace: str) -> None:
        """The ``kube-root-ca.crt`` ConfigMap, as upstream's root CA publisher
        keeps it in every namespace: what pods verify the API server with."""
        if self.pki is None:
            return
        config_maps = self.registry.by_kind("", "v1", "ConfigMap")
        assert config_maps is not None
        ca = self.pki.ca_cert.read_text()
        options = storing.WriteOptions(manager="root-ca-cert-publisher")
        entry = await self.store.get_stored(config_maps, namespace, admitting.ROOT_CA_CONFIG_MAP)
        if entry is None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": admitting.ROOT_CA_CONFIG_MAP,
                    "annotations": {
                        "kubernetes.io/description": "Contains a CA bundle that can be used to "
                        "verify the kube-apiserver when using internal endpoints such as the "
                        "internal service IP or kubernetes.default.svc. No other usage is "
                        "guaranteed across distributions of Kubernetes clusters."
                    },
                },
                "data": {"ca.crt": ca},
            }
            with contextlib.suppress(errors.StatusError):
                await self.store.create(config_maps, namespace, body, options)
            return
        if (entry.obj.get("data") or {}).get("ca.crt") != ca:

            def refresh(current: dict[str, Any] | None) -> dict[str, Any]:
                assert current is not None
                new = {**current, "data": {**(current.get("data") or {}), "ca.crt": ca}}
                new["metadata"] = {**current["metadata"]}
                new["metadata"].pop("resourceVersion", None)
                return new

            with contextlib.suppress(errors.StatusError):
                await self.store.update(
                    config_maps, namespace, admitting.ROOT_CA_CONFIG_MAP, refresh, options
                )

    async def _ensure_service_account(self, namespace: str) -> None:
        sa = self.registry.by_kind("", "v1", "ServiceAccount")
        assert sa is not None
        if await self.store.get_stored(sa, namespace, "default") is not None:
            return
        with contextlib.suppress(errors.StatusError):
            await self.store.create(
                sa,
                namespace,
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
                storing.WriteOptions(manager="nodeless"),
            )
