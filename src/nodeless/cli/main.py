"""``nodeless``: run a cluster (``up``) and ask about it (``version``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from nodeless import __version__
from nodeless.apiserver import app, certificates, endpoints
from nodeless.storage import compacting, sqlite

log = logging.getLogger("nodeless")

PROVIDERS = ("none",)


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


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
        default="none",
        help="instance provider (none: serve the API alone)",
    )
    up.add_argument("--log-level", default="WARNING")
    sub.add_parser("version", help="print the version")
    return p


async def up(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    host, port = args.listen
    backend = sqlite.SqliteBackend(data_dir / "state.db", watch_buffer=200_000)
    server = app.ApiServer(backend, host=host, port=port, pki_dir=data_dir / "pki")
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
    print(
        f"nodeless {__version__} ready: API at {server.url} (Kubernetes {endpoints.KUBE_VERSION}), provider {args.provider}",
        flush=True,
    )
    print(f"  export KUBECONFIG={kubeconfig}", flush=True)
    await stop.wait()
    print("nodeless: shutting down", flush=True)
    await compactor.stop()
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "version":
        print(f"nodeless {__version__} (Kubernetes API {endpoints.KUBE_VERSION})")
        return 0
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(up(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
