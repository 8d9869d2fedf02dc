"""The L7 ingress gateway: an aiohttp reverse proxy serving the Ingresses of
one IngressClass (``nodeless`` by default), as a cloud's ALB-backed ingress
does for a serverless cluster, and the routes of Knative Services
(``servingroutes``: their URL hosts, split between Revisions by percent).

Routing is ``ingresses.RouteTable``; this module is the I/O around it:

- informers on Ingresses, IngressClasses, Secrets and Knative Services plus the shared
  ``servicemaps.ServiceMap`` mark the table dirty; it is rebuilt lazily (at
  the next request or TLS handshake) and by a debounced background pass that
  also writes ``status.loadBalancer`` and Warning Events, so a burst of
  changes costs one rebuild, and a request without changes none;
- a request goes to a ready endpoint of the Service port, round-robin, over
  one shared keep-alive ``ClientSession``; a connection that fails before
  any byte of the request left (refused, unreachable, connect timeout) is
  retried on the next endpoint, and one that breaks later is retried only
  for an idempotent request without a body, since anything else may already
  have had its effect (aiohttp itself first retries such a request once on
  a fresh connection to the same endpoint: the stale keep-alive case);
- a Service without ready endpoints is handed to the activator (scale from
  zero) and its requests are held until an endpoint is ready or the hold
  timeout passes; without an activator they get 503 at once;
- HTTPS picks the certificate by SNI from the Ingresses' ``spec.tls``
  Secrets; unknown names get a self-signed fallback certificate, as
  ingress-nginx's "Fake Certificate".

Answers the gateway makes itself: 404 when no rule and no default backend
match, 503 when the Service, its port or ready endpoints are missing, 502
when every attempt to reach an endpoint failed, 504 when the endpoint
accepted but did not answer in time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import logging
import os
import re
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from nodeless import clocks
from nodeless.api import errors
from nodeless.client import clients, events, informers
from nodeless.networking import ingresses, servicemaps, servingroutes

log = logging.getLogger(__name__)
access_log = logging.getLogger("nodeless.gateway.access")

INGRESSES = clients.ResourceRef("networking.k8s.io", "v1", "ingresses", True, "Ingress")
INGRESS_CLASSES = clients.ResourceRef(
    "networking.k8s.io", "v1", "ingressclasses", False, "IngressClass"
)
SECRETS = clients.ResourceRef("", "v1", "secrets", True, "Secret")

FIELD_MANAGER = "nodeless-ingress-gateway"
COMPONENT = "nodeless-ingress-gateway"
_HOST_NAME = re.compile(r"[A-Za-z0-9*][A-Za-z0-9.-]*")
FALLBACK_COMMON_NAME = "Nodeless Ingress Gateway Fake Certificate"

# Headers that describe one connection, not the message (RFC 9110 7.6.1), plus
# Expect, which aiohttp's server has already answered.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
# Set by the gateway from what it saw, never taken from the client as is.
FORWARDED = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip"}
)
# The opening handshake's own headers; aiohttp's websocket client writes its own.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

MAX_ATTEMPTS = 3
DEFAULT_HOLD_TIMEOUT = 60.0
# Coalesces a burst of informer events into one status/event pass.
DEBOUNCE = 0.05
RETRY_AFTER_FAILURE = 1.0
CONNECT_TIMEOUT = 5.0
# An upstream silent for this long gets its request answered 504 (or, mid-body,
# the connection cut), as ingress-nginx's proxy-read-timeout and ALB's idle timeout.
READ_TIMEOUT = 60.0
# Idle client connections are closed after this, as nginx's keepalive_timeout.
CLIENT_KEEPALIVE = 75.0
# Idle upstream connections are dropped before the backend would drop them:
# below Node.js's 5 s default, so a request is never written into a connection
# the pod is closing (which could not be retried for a POST).
UPSTREAM_KEEPALIVE = 4.0

Activator = Callable[[str, str], Awaitable[None]]
Address = tuple[str, int]
ServiceKey = tuple[str, str]


@dataclass
class _Exchange:
    """What the access log says about one request."""

    status: int = 0
    bytes: int = 0
    upstream: str = "-"


class _NoEndpoint(Exception):
    """The request cannot be forwarded; the gateway answers ``status`` itself."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class IngressGateway:
    """Serves the Ingresses of ``class_name`` on ``listen`` (HTTP) and
    ``tls_listen`` (HTTPS, when given).

    ``services`` is the shared ServiceMap; its owner starts and stops it (it
    must be started before ``start`` is awaited). The informers come from
    ``factory`` and are left running on ``stop``: the factory owns them. Port 0
    listens on a free port; ``http_port`` and ``https_port`` tell which.
    """

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        services: servicemaps.ServiceMap,
        recorder: events.EventRecorder | None = None,
        class_name: str = ingresses.DEFAULT_CLASS,
        listen: Address = ("127.0.0.1", 8080),
        tls_listen: Address | None = None,
        *,
        activator: Activator | None = None,
        on_request: Callable[[str, str], Callable[[], None]] | None = None,
        hold_timeout: float = DEFAULT_HOLD_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        status_address: str = "",
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float | None = READ_TIMEOUT,
        clock: clocks.Clock | None = None,
    ) -> None:
        self.client = client
        self.services = services
        self.recorder = recorder
        self.class_name = class_name
        self.listen = listen
        self.tls_listen = tls_listen
        self.activator = activator
        # Told of every routed request as it starts; what it returns is called
        # when the request ends (scale-to-zero counts requests in flight).
        self.on_request = on_request
        self.hold_timeout = hold_timeout
        self.max_attempts = max(1, max_attempts)
        self.status_address = status_address or _advertised(listen[0])
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.http_port = listen[1]
        self.https_port = tls_listen[1] if tls_listen else 0
        self._clock = clock or clocks.SystemClock()
        self._ingresses = factory.informer(INGRESSES)
        self._classes = factory.informer(INGRESS_CLASSES)
        self._secrets = factory.informer(SECRETS)
        self._knative = factory.informer(servingroutes.KNATIVE_SERVICES)
        self._picker = servingroutes.WeightedPicker()
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []
        self._listening_to_services = False
        self._running = False
        self._table = ingresses.RouteTable()
        self._dirty = True
        self._changed = asyncio.Event()
        self._service_versions: dict[ServiceKey, str] = {}
        self._endpoints: dict[tuple[str, str, str, str], list[servicemaps.Endpoint]] = {}
        self._next: dict[tuple[str, str, str, str], int] = {}
        self._waiters: dict[ServiceKey, asyncio.Event] = {}
        self._activations: dict[ServiceKey, asyncio.Task[None]] = {}
        # TLS: one context per Secret, by the resourceVersion it was loaded from.
        self._certificates: dict[ingresses.Key, tuple[str, ssl.SSLContext | None, str]] = {}
        self._tls_problems: list[ingresses.Problem] = []
        self._directory: Path | None = None
        self._reported: dict[ingresses.Key, set[ingresses.Problem]] = {}
        self._written: set[ingresses.Key] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # A listen address in use must not leave informer handlers and an
            # open session behind.
            await self.stop()
            raise

    async def _start(self) -> None:
        self._running = True
        await self._ensure_ingress_class()
        for informer in (self._ingresses, self._classes, self._secrets, self._knative):
            handlers = informer.add_handlers(
                on_add=self._object_changed,
                on_update=lambda _old, new: self._object_changed(new),
                on_delete=self._object_changed,
            )
            self._subscriptions.append((informer, handlers))
            informer.start()
        if not self._listening_to_services:
            # ServiceMap has no way to unsubscribe; _running mutes us after stop.
            self.services.on_change(self._service_changed)
            self._listening_to_services = True
        for informer in (self._ingresses, self._classes, self._secrets, self._knative):
            await informer.wait_synced()
        await self.services.wait_synced()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                # Like nginx, no cap on upstream connections: a cap would queue
                # requests behind a connect timeout instead of failing fast.
                limit=0,
                keepalive_timeout=UPSTREAM_KEEPALIVE,
            ),
            # A proxy must never keep one client's cookies for another.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
            ),
        )
        server = web.Server(
            self._handle,
            access_log=None,  # ours is nodeless.gateway.access
            keepalive_timeout=CLIENT_KEEPALIVE,
            # Bodies pass through as the client encoded them.
            auto_decompress=False,
        )
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen[0], self.listen[1], backlog=1024)
        await site.start()
        self.http_port = _bound_port(site, self.listen[1])
        if self.tls_listen is not None:
            self._directory = Path(tempfile.mkdtemp(prefix="nodeless-gateway-"))
            self._mark_dirty()  # certificates load from now on
            tls_site = web.TCPSite(
                self._runner,
                self.tls_listen[0],
                self.tls_listen[1],
                ssl_context=self._server_context(),
                backlog=1024,
            )
            await tls_site.start()
            self.https_port = _bound_port(tls_site, self.tls_listen[1])
        self._task = asyncio.create_task(self._run(), name="ingress-gateway")
        self._changed.set()
        log.info("ingress gateway for class %s at %s", self.class_name, " ".join(self.urls()))

    def urls(self) -> list[str]:
        """Where the gateway listens (the bound ports once started)."""
        out = [_url("http", self.listen[0], self.http_port)]
        if self.tls_listen is not None:
            out.append(_url("https", self.tls_listen[0], self.https_port))
        return out

    async def stop(self) -> None:
        self._running = False
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []
        tasks = [t for t in (self._task, *self._activations.values()) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for event in self._waiters.values():
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    async def _ensure_ingress_class(self) -> None:
        """Our IngressClass, created when missing and never overwritten (a user
        may change it); it is the default unless another class already is."""
        try:
            await self.client.get(INGRESS_CLASSES, "", self.class_name)
            return
        except errors.StatusError as err:
            if err.code != 404:
                raise
        others = await self.client.list(INGRESS_CLASSES)
        other_default = any(
            ((o.get("metadata") or {}).get("annotations") or {}).get(
                ingresses.DEFAULT_CLASS_ANNOTATION
            )
            == "true"
            for o in others.items
        )
        meta: dict[str, Any] = {"name": self.class_name}
        if not other_default:
            meta["annotations"] = {ingresses.DEFAULT_CLASS_ANNOTATION: "true"}
        body = {
            "apiVersion": INGRESS_CLASSES.api_version,
            "kind": "IngressClass",
            "metadata": meta,
            "spec": {"controller": ingresses.CONTROLLER},
        }
        try:
            await self.client.create(
                INGRESS_CLASSES, body, clients.WriteOptions(field_manager=FIELD_MANAGER)
            )
        except errors.StatusError as err:
            if err.code != 409:
                raise

    # --- change tracking -----------------------------------------------------------------

    def _object_changed(self, _obj: clients.Object) -> None:
        self._mark_dirty()

    def _mark_dirty(self) -> None:
        self._dirty = True
        self._changed.set()

    def _service_changed(self, key: ServiceKey) -> None:
        if not self._running:
            return
        for cached in [k for k in self._endpoints if k[:2] == key]:
            del self._endpoints[cached]
        event = self._waiters.pop(key, None)
        if event is not None:
            event.set()
        # Most changes are endpoints coming and going; only the Service object
        # itself matters to the route table's problems.
        obj = self.services.service_object(*key)
        version = clients.resource_version(obj) if obj is not None else ""
        if self._service_versions.get(key, "") != version:
            if version:
                self._service_versions[key] = version
            else:
                self._service_versions.pop(key, None)
            self._mark_dirty()

    def route_table(self) -> ingresses.RouteTable:
        """The current table, rebuilt first if anything changed since."""
        if self._dirty:
            self._dirty = False
            self._rebuild()
        return self._table

    def _rebuild(self) -> None:
        classes = ingresses.select_classes(self._classes.objects(), self.class_name)

        def secret(namespace: str, name: str) -> Mapping[str, Any] | None:
            return self._secrets.get(f"{namespace}/{name}")

        table = ingresses.build(
            self._ingresses.objects(),
            classes,
            self.services.service,
            secret,
            extra=servingroutes.routes(self._knative.objects()),
        )
        if self._directory is not None:  # serving HTTPS
            self._load_certificates(table)
        self._table = table

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            await self._clock.sleep(DEBOUNCE)
            self._changed.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("ingress gateway: could not write Ingress status or events: %s", err)
                await self._clock.sleep(RETRY_AFTER_FAILURE)
                self._changed.set()

    async def reconcile(self) -> None:
        """Bring every Ingress's status and Warning Events in line with the
        current table (the background pass calls this after changes)."""
        table = self.route_table()
        problems: dict[ingresses.Key, list[ingresses.Problem]] = {
            key: list(found) for key, found in table.problems.items()
        }
        for problem in self._tls_problems:
            if problem.ingress in problems and problem not in problems[problem.ingress]:
                problems[problem.ingress].append(problem)
        self._report(problems)
        await self._write_statuses(set(problems))

    def _report(self, problems: Mapping[ingresses.Key, list[ingresses.Problem]]) -> None:
        """One Warning Event per distinct problem while it lasts; a problem that
        goes away and comes back is reported again."""
        for key, found in problems.items():
            before = self._reported.get(key, set())
            obj = self._ingresses.get(f"{key[0]}/{key[1]}")
            if self.recorder is not None and obj is not None:
                involved = clients.copy_with_type(INGRESSES, obj)
                for problem in found:
                    if problem not in before:
                        self.recorder.record(involved, "Warning", problem.reason, problem.message)
            self._reported[key] = set(found)
        for key in [k for k in self._reported if k not in problems]:
            del self._reported[key]

    def _status_entry(self) -> dict[str, Any]:
        try:
            ipaddress.ip_address(self.status_address)
        except ValueError:
            return {"hostname": self.status_address}
        return {"ip": self.status_address}

    async def _write_statuses(self, ours: set[ingresses.Key]) -> None:
        desired = [self._status_entry()]
        for obj in self._ingresses.objects():
            key = ingresses.ingress_key(obj)
            current = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if key in ours:
                if current == desired:
                    self._written.add(key)
                    continue
                await self._patch_status(key, desired)
                self._written.add(key)
            elif key in self._written:
                # No longer ours (its class changed): take back what we wrote,
                # and only that, so two gateways never fight over a status.
                if current == desired:
                    await self._patch_status(key, None)
                self._written.discard(key)
        self._written &= {ingresses.ingress_key(o) for o in self._ingresses.objects()}

    async def _patch_status(self, key: ingresses.Key, entries: list[dict[str, Any]] | None) -> None:
        try:
            await self.client.patch(
                INGRESSES,
                key[0],
                key[1],
                {"status": {"loadBalancer": {"ingress": entries}}},
                subresource="status",
                options=clients.WriteOptions(field_manager=FIELD_MANAGER),
            )
        except errors.StatusError as err:
            if err.code != 404:  # deleted meanwhile
                raise

    # --- TLS -------------------------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        assert self._directory is not None
        cert, key = self_signed_certificate(FALLBACK_COMMON_NAME)
        context = self._context_from_pem(cert, key)
        context.sni_callback = self._choose_certificate
        return context

    def _context_from_pem(self, cert: bytes, key: bytes) -> ssl.SSLContext:
        """A server context for one certificate; ``load_cert_chain`` only reads
        files, so they live in our private directory just for the call."""
        assert self._directory is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        stem = self._directory / secrets.token_hex(8)
        cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
        try:
            for path, data in ((cert_path, cert), (key_path, key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            context.load_cert_chain(cert_path, key_path)
        finally:
            cert_path.unlink(missing_ok=True)
            key_path.unlink(missing_ok=True)
        return context

    def _load_certificates(self, table: ingresses.RouteTable) -> None:
        loaded: dict[ingresses.Key, tuple[str, ssl.SSLContext | None, str]] = {}
        problems: list[ingresses.Problem] = []
        for entry in table.tls:
            namespace, name = entry.secret
            secret = self._secrets.get(f"{namespace}/{name}") or {}
            version = clients.resource_version(secret)
            found = loaded.get(entry.secret) or self._certificates.get(entry.secret)
            if found is None or found[0] != version:
                found = (version, *self._load_secret(secret))
            loaded[entry.secret] = found
            if found[1] is None:
                problems.append(
                    ingresses.Problem(
                        entry.ingress,
                        ingresses.INVALID_TLS_SECRET,
                        f"TLS Secret {namespace}/{name}: {found[2]}",
                    )
                )
        self._certificates = loaded
        self._tls_problems = problems

    def _load_secret(self, secret: Mapping[str, Any]) -> tuple[ssl.SSLContext | None, str]:
        data = secret.get("data") or {}
        try:
            cert = base64.b64decode(data.get("tls.crt") or "")
            key = base64.b64decode(data.get("tls.key") or "")
            return self._context_from_pem(cert, key), ""
        except (ValueError, ssl.SSLError, OSError) as err:
            return None, f"cannot load the certificate and key: {err}"

    def _choose_certificate(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        try:
            for entry in self.route_table().certificate_for(server_name):
                found = self._certificates.get(entry.secret)
                if found is not None and found[1] is not None:
                    connection.context = found[1]
                    break
        except Exception:  # the handshake must go on with the fallback certificate
            log.exception("ingress gateway: choosing a certificate for %s failed", server_name)
        return None

    # --- serving -----------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        exchange = _Exchange()
        try:
            return await self._serve(request, exchange)
        finally:
            access_log.info(
                '%s %s "%s %s" %d %d %s %.1fms',
                request.remote or "-",
                request.host,
                request.method,
                request.raw_path,
                exchange.status,
                exchange.bytes,
                exchange.upstream,
                (loop.time() - started) * 1000.0,
            )

    async def _serve(self, request: web.BaseRequest, exchange: _Exchange) -> web.StreamResponse:
        match = self.route_table().match(request.host, request.path)
        if match is None:
            return _answer(exchange, 404, "404 page not found: no Ingress rule matches")
        route = match.route
        if route is not None and len(route.split) > 1:
            backend = self._picker.pick(route.host, route.split)
            match = ingresses.Match(backend, match.ingress, route)
        if self.on_request is not None:
            finished = self.on_request(match.backend.namespace, match.backend.service)
            try:
                return await self._serve_match(request, exchange, match)
            finally:
                finished()
        return await self._serve_match(request, exchange, match)

    async def _serve_match(
        self, request: web.BaseRequest, exchange: _Exchange, match: ingresses.Match
    ) -> web.StreamResponse:
        backend = match.backend
        refill: Callable[[], Awaitable[list[servicemaps.Endpoint]]] | None = None
        try:
            port = self._service_port(backend)
            endpoints = self._ready(backend, port)
            if not endpoints:
                endpoints = await self._hold(backend)
            elif self.activator is not None and not any(e.ready for e in endpoints):
                # Only draining pods serve it (scaled down a moment ago): this
                # request is tried on them, and the Service woken; if they no
                # longer accept connections, the request waits for a ready pod.
                self._activate((backend.namespace, backend.service))

                async def refill() -> list[servicemaps.Endpoint]:
                    return await self._hold(backend, ready_only=True)

        except _NoEndpoint as err:
            return _answer(exchange, err.status, err.message)
        if _is_websocket(request):
            return await self._websocket(request, endpoints, exchange)
        return await self._forward(request, endpoints, exchange, refill)

    def _service_port(self, backend: ingresses.Backend) -> servicemaps.ServicePort:
        service = self.services.service(backend.namespace, backend.service)
        if service is None:
            raise _NoEndpoint(503, f"Service {backend.namespace}/{backend.service} not found")
        port = ingresses.resolve_port(service, backend.port)
        if port is None:
            raise _NoEndpoint(503, f"Service {backend} has no such TCP port")
        return port

    def _ready(
        self, backend: ingresses.Backend, port: servicemaps.ServicePort
    ) -> list[servicemaps.Endpoint]:
        """Ready endpoints in round-robin order from this request's turn; when
        none is ready, serving terminating ones (kube-proxy's fallback)."""
        key = (backend.namespace, backend.service, port.name, port.protocol)
        endpoints = self._endpoints.get(key)
        if endpoints is None:
            every = self.services.endpoints(backend.namespace, backend.service, port)
            endpoints = [e for e in every if e.ready] or [
                e for e in every if e.serving and e.terminating
            ]
            self._endpoints[key] = endpoints
        if not endpoints:
            return []
        turn = self._next.get(key, 0) % len(endpoints)
        self._next[key] = turn + 1
        return endpoints[turn:] + endpoints[:turn]

    async def _hold(
        self, backend: ingresses.Backend, *, ready_only: bool = False
    ) -> list[servicemaps.Endpoint]:
        """Wake the Service through the activator and wait for an endpoint to
        serve (with ``ready_only``, a ready one: draining ones failed already)."""
        if self.activator is None:
            raise _NoEndpoint(503, f"no ready endpoints for Service {backend}")
        key = (backend.namespace, backend.service)
        activation = self._activate(key)
        deadline = asyncio.create_task(self._clock.sleep(self.hold_timeout))
        try:
            while self._running:
                endpoints = self._ready(backend, self._service_port(backend))
                if endpoints and (not ready_only or any(e.ready for e in endpoints)):
                    return endpoints
                if activation.done() and not activation.cancelled() and activation.exception():
                    raise _NoEndpoint(503, f"could not activate Service {backend}")
                changed = asyncio.create_task(self._waiters.setdefault(key, asyncio.Event()).wait())
                waiting: set[asyncio.Future[Any]] = {changed, deadline}
                if not activation.done():
                    waiting.add(activation)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if deadline.done():
                    break
        finally:
            deadline.cancel()
        raise _NoEndpoint(503, f"no ready endpoints for Service {backend}")

    def _activate(self, key: ServiceKey) -> asyncio.Task[None]:
        """One activator call per Service at a time, however many requests wait."""
        task = self._activations.get(key)
        if task is None:
            activator = self.activator
            assert activator is not None

            async def activate() -> None:
                await activator(*key)

            task = asyncio.create_task(activate(), name=f"activate-{key[0]}/{key[1]}")
            self._activations[key] = task

            def done(finished: asyncio.Task[None]) -> None:
                if self._activations.get(key) is finished:
                    del self._activations[key]
                if not finished.cancelled() and finished.exception() is not None:
                    log.warning(
                        "ingress gateway: activating %s/%s failed: %s",
                        *key,
                        finished.exception(),
                    )

            task.add_done_callback(done)
        return task

    def _upstream_headers(self, request: web.BaseRequest) -> CIMultiDict[str]:
        listed = _connection_tokens(request.headers)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in FORWARDED or lower in listed:
                continue
            out.add(name, value)
        client_ip = request.remote or ""
        prior = ", ".join(request.headers.getall("X-Forwarded-For", []))
        out["X-Forwarded-For"] = f"{prior}, {client_ip}" if prior else client_ip
        out["X-Forwarded-Proto"] = request.scheme
        out["X-Forwarded-Host"] = request.host
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            out["X-Forwarded-Port"] = str(sockname[1])
        out["X-Real-IP"] = client_ip
        if "X-Request-Id" not in out:
            out["X-Request-Id"] = secrets.token_hex(16)
        return out

    async def _forward(
        self,
        request: web.BaseRequest,
        endpoints: list[servicemaps.Endpoint],
        exchange: _Exchange,
        refill: Callable[[], Awaitable[list[servicemaps.Endpoint]]] | None = None,
    ) -> web.StreamResponse:
        """Send the request to the first endpoint that takes it. When every
        attempt failed to connect (nothing was sent) and ``refill`` is given,
        wait for the endpoints it gives and try those."""
        assert self._session is not None
        headers = self._upstream_headers(request)
        has_body = request.body_exists
        replayable = request.method in IDEMPOTENT and not has_body
        failure = ""
        attempts = list(endpoints[: self.max_attempts])
        while attempts:
            endpoint = attempts.pop(0)
            exchange.upstream = f"{endpoint.ip}:{endpoint.port}"
            url = URL(f"http://{exchange.upstream}{request.raw_path}", encoded=True)
            try:
                upstream = await self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=request.content if has_body else None,
                    allow_redirects=False,
                    skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as err:
                # Nothing of the request left: any request may go elsewhere.
                failure = str(err) or type(err).__name__
                if not attempts and refill is not None:
                    try:
                        attempts = list((await refill())[: self.max_attempts])
                    except _NoEndpoint as held:
                        return _answer(exchange, held.status, held.message)
                    refill = None
                continue
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as err:
                failure = str(err) or type(err).__name__
                if replayable:
                    continue
                break
            except TimeoutError:
                return _answer(exchange, 504, f"upstream {exchange.upstream} timed out")
            except aiohttp.ClientError as err:
                failure = str(err) or type(err).__name__
                break
            async with upstream:
                return await self._relay(request, upstream, exchange)
        log.info("ingress gateway: %s %s failed: %s", request.method, request.raw_path, failure)
        return _answer(exchange, 502, f"502 bad gateway: {failure}")

    async def _relay(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        exchange: _Exchange,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        listed = _connection_tokens(upstream.headers)
        for name, value in upstream.headers.items():
            lower = name.lower()
            if lower not in HOP_BY_HOP and lower not in listed:
                response.headers.add(name, value)
        exchange.status = upstream.status
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                exchange.bytes += len(chunk)
        except ConnectionError:
            # The client went away: drop the upstream connection too.
            upstream.close()
            return response
        except (aiohttp.ClientError, TimeoutError) as err:
            # Headers are out; the only honest signal left is a broken connection,
            # never a clean end of a truncated body.
            log.info("ingress gateway: upstream %s broke mid-body: %s", exchange.upstream, err)
            upstream.close()
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def _websocket(
        self,
        request: web.BaseRequest,
        endpoints: list[servicemaps.Endpoint],
        exchange: _Exchange,
    ) -> web.StreamResponse:
        """Relay a WebSocket message by message, after the upstream accepted it."""
        assert self._session is not None
        headers = self._upstream_headers(request)
        for name in WEBSOCKET_HANDSHAKE:
            headers.popall(name, None)
        protocols = [
            p.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", [])
            for p in value.split(",")
            if p.strip()
        ]
        upstream: aiohttp.ClientWebSocketResponse | None = None
        failure = ""
        for endpoint in endpoints[: self.max_attempts]:
            exchange.upstream = f"{endpoint.ip}:{endpoint.port}"
            url = URL(f"http://{exchange.upstream}{request.raw_path}", encoded=True)
            try:
                upstream = await self._session.ws_connect(
                    url,
                    headers=headers,
                    protocols=protocols,
                    autoclose=False,
                    autoping=False,
                    max_msg_size=0,
                )
                break
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as err:
                failure = str(err) or type(err).__name__
            except aiohttp.WSServerHandshakeError as err:
                return _answer(exchange, err.status or 502, f"upstream refused the upgrade: {err}")
            except aiohttp.ClientError as err:
                failure = str(err) or type(err).__name__
                break
        if upstream is None:
            return _answer(exchange, 502, f"502 bad gateway: {failure}")
        downstream = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            autoclose=False,
            autoping=False,
            max_msg_size=0,
        )
        exchange.status = 101
        try:
            await downstream.prepare(request)
            relays = [
                asyncio.create_task(_pump(upstream, downstream)),
                asyncio.create_task(_pump(downstream, upstream)),
            ]
            try:
                await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for relay in relays:
                    relay.cancel()
                await asyncio.gather(*relays, return_exceptions=True)
        finally:
            await upstream.close()
            await downstream.close()
        return downstream


# --- helpers of this module -------------------------------------------------------------


def _answer(exchange: _Exchange, status: int, text: str) -> web.Response:
    body = (text.rstrip("\n") + "\n").encode()
    exchange.status = status
    exchange.bytes = len(body)
    return web.Response(status=status, body=body, content_type="text/plain")


def _connection_tokens(headers: MultiMapping[str]) -> set[str]:
    """Header names the Connection header marks hop-by-hop for this message."""
    values = headers.getall("Connection", [])
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}


def _is_websocket(request: web.BaseRequest) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in _connection_tokens(request.headers)
    )


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type == aiohttp.WSMsgType.PING:
            await sink.ping(message.data)
        elif message.type == aiohttp.WSMsgType.PONG:
            await sink.pong(message.data)
    # A close frame (or a broken connection) ends the iteration: pass the code on.
    await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)


def _advertised(host: str) -> str:
    """The address Ingress statuses show: the listen address, or loopback when
    listening on every address."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return host


def _url(scheme: str, host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def _bound_port(site: web.TCPSite, wanted: int) -> int:
    if wanted:
        return wanted
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])


def self_signed_certificate(common_name: str, days: int = 3650) -> tuple[bytes, bytes]:
    """A PEM certificate and key for ``common_name``, signed by itself: the
    certificate for names no Ingress has one for."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    # A host name is its own SAN; the fallback's descriptive name is not one.
    san = common_name if _HOST_NAME.fullmatch(common_name) else "ingress.local"
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
