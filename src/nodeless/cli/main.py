"""``nodeless``: run a cluster (``up``) and ask about it (``version``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nodeless import __version__, clocks
from nodeless.api import errors, knativeserving
from nodeless.apiserver import (
    app,
    certificates,
    endpoints,
    loopback,
    metrics,
    serviceaccounts,
    serviceips,
)
from nodeless.cli import costs, memory, spotprices
from nodeless.client import clients, events, informers, leaderelection
from nodeless.controllers import running
from nodeless.instances import imagecaches, managing, nodes, reclaiming
from nodeless.instances.providers import base, simulated
from nodeless.instances.providers.cri import containerd as cri_containerd
from nodeless.instances.providers.cri import gpudevices, registryauth
from nodeless.instances.providers.cri import podconfigs as cri_podconfigs
from nodeless.instances.providers.cri import provider as cri_provider
from nodeless.instances.providers.cri import volumefiles as cri_volumefiles
from nodeless.networking import running as networking
from nodeless.scheduler import scheduling
from nodeless.serverless import catalogue, spotmarket
from nodeless.storage import compacting, sqlite

log = logging.getLogger("nodeless")

PROVIDERS = ("none", "simulated", "cri")
SECRETS = clients.ResourceRef("", "v1", "secrets", True, "Secret")
SIMULATED_GPUS = 8
SERVICES = clients.ResourceRef("", "v1", "services", True, "Service")
CONFIGMAPS = clients.ResourceRef("", "v1", "configmaps", True, "ConfigMap")
SERVICE_ACCOUNTS = clients.ResourceRef("", "v1", "serviceaccounts", True, "ServiceAccount")
CLAIMS = clients.ResourceRef("", "v1", "persistentvolumeclaims", True, "PersistentVolumeClaim")
PERSISTENT_VOLUMES = clients.ResourceRef("", "v1", "persistentvolumes", False, "PersistentVolume")
# What a pod's volumes may name, by kind (the CRI provider's object lookups).
VOLUME_OBJECTS = {ref.kind: ref for ref in (CONFIGMAPS, SECRETS, CLAIMS, PERSISTENT_VOLUMES)}
# Images examples/ uses, built from the host's busybox where no registry is reachable.
DEMO_IMAGES = ("registry.local/nodeless/httpd:1.0", "registry.local/nodeless/busybox:1.36")
# Instance manager workers with the simulated provider.
SIMULATED_INSTANCE_WORKERS = 64
# Exit status when NODELESS_CHECK_CACHE found a component writing to shared objects.
CACHE_CORRUPTED = 70


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _address(text: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) as a pair."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _optional_listen(text: str) -> tuple[str, int] | None:
    return None if text in ("off", "none", "") else _listen(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nodeless",
        description="A serverless Kubernetes: every Pod an elastic container instance.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run a Nodeless cluster in the foreground")
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="state: store, certificates, kubeconfig (default ./data)",
    )
    up.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 6443),
        help="API address HOST:PORT (default 127.0.0.1:6443; port 0 picks one)",
    )
    up.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="cri",
        help="instance provider: cri (real pods on a containerd Nodeless runs; falls back to "
        "simulated where it cannot), simulated (clock-driven, no containers) or none "
        "(serve the API alone)",
    )
    up.add_argument(
        "--pod-cidr",
        default="10.88.0.0/16",
        help="cri: the pods' network (CNI bridge and host-local IPAM)",
    )
    up.add_argument(
        "--pod-bridge",
        default="nodeless0",
        help="cri: the host bridge the pods' network uses (one per --pod-cidr)",
    )
    up.add_argument(
        "--service-cidr",
        default=serviceips.DEFAULT_SERVICE_CIDR,
        help="the range Service ClusterIPs come from (default 10.96.0.0/12; the DNS Service "
        "takes its 10th address)",
    )
    up.add_argument(
        "--cluster-domain", default=networking.DEFAULT_DOMAIN, help="cluster DNS domain"
    )
    up.add_argument(
        "--serving-domain",
        default=knativeserving.DEFAULT_DOMAIN,
        help="the domain of Knative Services' URLs: http://<name>.<namespace>.<domain> "
        "(default example.com, as Knative's config-domain)",
    )
    up.add_argument(
        "--ingress-listen",
        type=_optional_listen,
        default=("127.0.0.1", 8080),
        help="cri: the ingress gateway's HTTP address HOST:PORT, or off (default 127.0.0.1:8080)",
    )
    up.add_argument(
        "--ingress-tls-listen",
        type=_optional_listen,
        default=("127.0.0.1", 8443),
        help="cri: the ingress gateway's HTTPS address, or off (default 127.0.0.1:8443)",
    )
    up.add_argument(
        "--spot-market",
        type=Path,
        default=None,
        help="the spot market's configuration (seed, price band, stock per zone); default: "
        "the packaged spot.yaml",
    )
    up.add_argument(
        "--cri-socket",
        default=None,
        help="cri: use the CRI runtime at this socket instead of starting containerd",
    )
    up.add_argument(
        "--zones", default="zone-a", help="comma-separated zone names, one virtual node each"
    )
    up.add_argument(
        "--zone-max-instances", type=int, default=10_000, help="instance quota per zone"
    )
    up.add_argument(
        "--zone-max-gpus",
        type=int,
        default=None,
        help="nvidia.com/gpu per zone (default: cri, the host's NVIDIA devices; simulated, 8)",
    )
    up.add_argument(
        "--sim-start-latency",
        type=float,
        default=0.0,
        help="simulated: seconds from create to running",
    )
    up.add_argument(
        "--sim-pull-latency",
        type=float,
        default=0.0,
        help="simulated: seconds to pull an uncached image",
    )
    up.add_argument(
        "--sim-failure-rate", type=float, default=0.0, help="simulated: share of creates that fail"
    )
    up.add_argument("--log-level", default="WARNING")
    costs.add_parser(sub)
    spotprices.add_parser(sub)
    sub.add_parser("version", help="print the version")
    return p


async def up(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    host, port = args.listen
    zone_names = [z.strip() for z in args.zones.split(",") if z.strip()]
    zones = [nodes.Zone(name, max_instances=args.zone_max_instances) for name in zone_names]
    backend = sqlite.SqliteBackend(data_dir / "state.db", watch_buffer=200_000)
    server = app.ApiServer(
        backend,
        host=host,
        port=port,
        pki_dir=data_dir / "pki",
        zones=zone_names,
        service_cidr=args.service_cidr,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    compactor = compacting.Compactor(backend, interval=300.0, keep_revisions=100_000)
    compactor.start()
    assert server.pki is not None
    kubeconfig = data_dir / "kubeconfig"
    certificates.write_kubeconfig(server.pki, kubeconfig, server.url)
    components = None
    if args.provider == "cri" and (why := cri_containerd.unavailable_reason()):
        print(f"nodeless: not running pods on containerd: {why}; using the simulated provider")
        args.provider = "simulated"
    if args.provider != "none":
        gpus = args.zone_max_gpus
        if gpus is None:
            # Real pods get the host's GPUs; simulated ones, simulated GPUs.
            gpus = len(gpudevices.discover().indices) if args.provider == "cri" else SIMULATED_GPUS
        zones = [dataclasses.replace(z, max_gpus=gpus) for z in zones]
        components = await start_components(args, server.api, zones, server.catalogue, stop)
    print(
        f"nodeless {__version__} ready: API at {server.url} (Kubernetes {endpoints.KUBE_VERSION}), "
        f"provider {args.provider}, zones {','.join(zone_names)}",
        flush=True,
    )
    print(f"  export KUBECONFIG={kubeconfig}", flush=True)
    gateway = components.network.gateway if components and components.network else None
    if gateway is not None:
        for url in gateway.urls():
            print(f"  ingress gateway at {url}", flush=True)
    collector = memory.CycleCollector()
    collector.start()
    await stop.wait()
    await collector.stop()
    print("nodeless: shutting down", flush=True)
    if components is not None:
        await components.stop()
    await compactor.stop()
    corrupted = server.store.cacher.verify() if os.environ.get("NODELESS_CHECK_CACHE") else []
    await server.stop()
    if corrupted:
        print(f"nodeless: cached objects changed in place: {corrupted[:20]}", file=sys.stderr)
        return CACHE_CORRUPTED
    return 0


class Components:
    """What runs beside the API server when there is a provider: the zones'
    virtual nodes, the instance manager, the scheduler and the controllers,
    all clients of the API, led by whoever holds the controller Lease."""

    def __init__(self, client: clients.ApiClient, recorder: events.EventRecorder) -> None:
        self.client = client
        self.recorder = recorder
        self.running: list[Any] = []
        self.elector: leaderelection.LeaderElector | None = None
        self.network: networking.HostNetworking | None = None
        self.task: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for component in reversed(self.running):
            with contextlib.suppress(Exception):
                await component.stop()
        if self.elector is not None:
            await self.elector.release()
        await self.recorder.stop()
        await self.client.close()


async def start_components(
    args: argparse.Namespace,
    api: endpoints.Api,
    zones: list[nodes.Zone],
    specs: catalogue.Catalogue,
    lost: asyncio.Event,
) -> Components:
    clock = clocks.SystemClock()
    # In process, the components speak to the API through the loopback client:
    # the same validation and admission as HTTP, without sockets or re-decoding.
    client = loopback.LoopbackApiClient(api)
    recorder = events.EventRecorder(client, "nodeless", clock)
    recorder.start()
    components = Components(client, recorder)
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    elector = leaderelection.LeaderElector(
        client, "nodeless-controller-manager", identity, clock=clock
    )
    components.elector = elector
    led = asyncio.Event()

    async def lead() -> None:
        # The leader runs the instances: only it starts the provider (and containerd).
        host_network: networking.HostNetworking | None = None
        dns: cri_podconfigs.DnsSettings | None = None
        if args.provider == "cri":
            settings = networking.NetworkSettings(
                pod_cidr=args.pod_cidr,
                bridge=args.pod_bridge,
                service_cidr=args.service_cidr,
                domain=args.cluster_domain,
                ingress_listen=args.ingress_listen,
                ingress_tls_listen=args.ingress_tls_listen,
                api_address=_address(api.address),
            )
            host_network = networking.HostNetworking(client, settings, recorder=recorder)
            dns_ip = await host_network.register_dns()
            dns = cri_podconfigs.DnsSettings(servers=(dns_ip,), domain=args.cluster_domain)
        # One watch and one cache per resource for the instance manager, the
        # scheduler and the controllers, not three of each for pods. Stopped
        # after all of them.
        shared = informers.InformerFactory(client, clock=clock)
        components.running.append(shared)
        # The Services' variables of every container start, read from a cache
        # as the kubelet reads them, not listed per container.
        services: informers.Informer | None = None
        if args.provider == "cri":
            services = shared.informer(SERVICES)
            shared.start()
        provider = await start_provider(args, client, zones, clock, api.tokens, dns, services)
        if host_network is not None and provider.name == "cri":
            # Services, DNS and the ingress gateway serve the pods' network.
            await host_network.start()
            components.running.append(host_network)
            components.network = host_network
        virtual_nodes = nodes.VirtualNodes(client, zones, provider.name, clock)
        await virtual_nodes.register()
        virtual_nodes.start()
        components.running.append(virtual_nodes)
        manager = managing.InstanceManager(
            client,
            provider,
            zones,
            specs,
            clock=clock,
            recorder=recorder,
            # Simulated instances answer at once: syncs wait only on the store's
            # commits, so more in flight keep pace with the scheduler (measured,
            # 10,000 pods: 16 left pods bound at 35 s Running at 67 s). A real
            # runtime's calls take CPU of their own: more in flight slowed them.
            workers=(
                SIMULATED_INSTANCE_WORKERS
                if provider.name == "simulated"
                else managing.DEFAULT_WORKERS
            ),
            factory=shared,
        )
        await manager.start()
        components.running.append(manager)
        # One market for buying spot (the scheduler) and taking it back.
        market = spotmarket.SpotMarket.load(args.spot_market)
        reclaimer = reclaiming.SpotReclaimer(
            manager, market, clock=clock, notice_seconds=market.settings.notice_seconds
        )
        await reclaimer.start()
        components.running.append(reclaimer)
        if isinstance(provider, base.ImagePuller):
            # ImageCaches pull through the provider that runs the pods.
            image_caches = imagecaches.ImageCacheController(
                client, provider, clock=clock, recorder=recorder
            )
            await image_caches.start()
            components.running.append(image_caches)

        async def pod_logs(
            namespace: str, name: str, options: endpoints.PodLogOptions
        ) -> AsyncIterator[bytes]:
            return await manager.logs(
                namespace,
                name,
                options.container,
                follow=options.follow,
                previous=options.previous,
                timestamps=options.timestamps,
                tail_lines=options.tail_lines,
                since=options.since,
                limit_bytes=options.limit_bytes,
            )

        # pods/log reads what this process's instances printed.
        api.logs_source = pod_logs

        async def pod_stream(
            namespace: str,
            name: str,
            container: str,
            command: list[str] | None,
            stdin: bool,
            stdout: bool,
            stderr: bool,
            tty: bool,
        ) -> str:
            return await manager.stream_url(
                namespace,
                name,
                container,
                command,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                tty=tty,
            )

        # pods/exec and pods/attach stream to this process's instances.
        api.stream_source = pod_stream
        # pods/portforward connects to them.
        api.port_forward_source = manager.port_forward

        async def pod_usage() -> list[metrics.PodUsage]:
            try:
                samples = await manager.usage()
            except base.ProviderError as e:
                log.warning("reading instance usage failed: %s", e)
                return []
            return [
                metrics.PodUsage(
                    pod,
                    usage.timestamp,
                    usage.window_seconds,
                    [
                        metrics.ContainerUsage(c.name, c.cpu_nano_cores, c.memory_working_set_bytes)
                        for c in usage.containers
                    ],
                )
                for pod, usage in samples
            ]

        # metrics.k8s.io (kubectl top, the HPA) reads their usage.
        api.metrics_source = pod_usage
        scheduler = scheduling.Scheduler(
            client,
            zones,
            specs,
            clock=clock,
            recorder=recorder,
            market=market,
            factory=shared,
        )
        scheduler.start()
        components.running.append(scheduler)
        controllers = running.ControllerManager(
            client,
            clock=clock,
            recorder=recorder,
            # The local-path provisioner's PersistentVolumes live beside the store.
            volumes_root=Path(args.data_dir).resolve() / "volumes",
            serving_domain=args.serving_domain,
            factory=shared,
        )
        await controllers.start()
        components.running.append(controllers)
        led.set()

    async def follow() -> None:
        # Another process leads; lost leadership ends this one, as upstream does.
        lost.set()

    components.task = asyncio.create_task(elector.run(lead, follow), name="leader-election")
    # Wait to lead (or for the election to fail) before reporting ready.
    waiter = asyncio.create_task(led.wait())
    await asyncio.wait({waiter, components.task}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if components.task.done():
        components.task.result()
    return components


async def start_provider(
    args: argparse.Namespace,
    client: clients.ApiClient,
    zones: list[nodes.Zone],
    clock: clocks.Clock,
    token_issuer: serviceaccounts.TokenIssuer | None = None,
    dns: cri_podconfigs.DnsSettings | None = None,
    services: informers.Informer | None = None,
) -> base.Provider:
    capacity = {z.name: z.max_instances for z in zones}
    if args.provider == "cri":

        async def pull_secrets(namespace: str, names: list[str]) -> list[dict[str, Any]]:
            docs = []
            for name in names:
                with contextlib.suppress(errors.StatusError, registryauth.CredentialsError):
                    secret = await client.get(SECRETS, namespace, name)
                    docs.append(registryauth.docker_config_from_secret(secret))
            return docs

        async def api_objects(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
            ref = VOLUME_OBJECTS[kind]
            try:
                return await client.get(ref, namespace if ref.namespaced else "", name)
            except errors.StatusError as err:
                if err.code == 404:
                    return None
                raise

        assert services is not None, "start_components gives real pods a Service informer"
        service_cache = services

        async def namespace_services(namespace: str) -> list[dict[str, Any]]:
            await service_cache.wait_synced()
            return service_cache.objects(namespace)

        async def service_account_token(request: cri_volumefiles.TokenRequest) -> str:
            # What serviceaccounts/<name>/token answers, signed by the API server's issuer.
            if token_issuer is None:
                raise RuntimeError("this API server issues no service account tokens")
            account = await client.get(SERVICE_ACCOUNTS, request.namespace, request.service_account)
            token, _ = token_issuer.issue(
                request.namespace,
                request.service_account,
                str((account.get("metadata") or {}).get("uid") or ""),
                clock.now(),
                request.expiration_seconds,
                list(request.audiences),
            )
            return token

        try:
            return await cri_provider.start_cri_provider(
                Path(args.data_dir).resolve(),
                clock,
                pod_cidr=args.pod_cidr,
                bridge=args.pod_bridge,
                external_socket=args.cri_socket,
                zone_capacity=capacity,
                credentials=pull_secrets,
                objects=api_objects,
                services=namespace_services,
                tokens=service_account_token,
                preload_images=DEMO_IMAGES,
                **({"dns": dns} if dns is not None else {}),
            )
        except cri_containerd.ContainerdError as err:
            print(f"nodeless: cannot run pods on containerd ({err}); using the simulated provider")
    return simulated.SimulatedProvider(
        clock,
        start_latency=args.sim_start_latency,
        pull_latency=args.sim_pull_latency,
        failure_rate=args.sim_failure_rate,
        zone_capacity=capacity,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "version":
        print(f"nodeless {__version__} (Kubernetes API {endpoints.KUBE_VERSION})")
        return 0
    if args.command == "cost":
        return asyncio.run(costs.run(args))
    if args.command == "spot":
        return spotprices.run(args)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(up(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
