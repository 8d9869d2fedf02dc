"""Networking on real pods: Service virtual IPs from the host and from pods,
cluster DNS inside pods, and the ingress gateway (hosts, paths, TLS with SNI)
in front of them, with `nodeless up --provider cri` and kubectl."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from conftest import (
    Cluster,
    eventually,
    free_port,
    remove_pod_network,
    remove_pods,
    start_cluster,
    stop_cluster,
)

from nodeless.instances.providers.cri import containerd
from nodeless.networking import gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

POD_CIDR = "10.91.0.0/24"
SERVICE_CIDR = "10.97.0.0/16"
DNS_IP = "10.97.0.10"
BRIDGE = "nltest7"
APPS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: %(name)s, namespace: default}
spec:
  replicas: %(replicas)s
  selector: {matchLabels: {app: %(name)s}}
  template:
    metadata: {labels: {app: %(name)s}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: registry.local/nodeless/busybox:1.36
        command:
        - sh
        - -c
        - >-
          mkdir -p /www/v1 && echo "%(name)s $(hostname)" > /www/index.html
          && cp /www/index.html /www/v1/index.html
          && httpd -f -p 8080 -h /www & trap 'exit 0' TERM; wait
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /index.html, port: http}
          periodSeconds: 1
        lifecycle:
          preStop: {sleep: {seconds: 2}}
---
apiVersion: v1
kind: Service
metadata: {name: %(name)s, namespace: default}
spec:
  selector: {app: %(name)s}
  ports: [{name: web, port: 80, targetPort: http}]
"""
# busybox-static's wget crashes on its NSS lookups (static glibc cannot load
# NSS modules), so names are resolved with nslookup, which speaks DNS itself,
# and HTTP goes through nc.
CLIENT = """
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: registry.local/nodeless/busybox:1.36
    command:
    - sh
    - -c
    - >-
      cat /etc/resolv.conf;
      for name in web api.default.svc.cluster.local; do
      addr=$(nslookup $name | awk '/^Address: /{a=$2} END{print a}');
      echo "$name=$addr";
      printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $addr 80 | tail -1; done
"""


def get(
    host: str, port: int, path: str, *, header_host: str = "", timeout: float = 5
) -> tuple[int, str]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": header_host} if header_host else {})
        reply = connection.getresponse()
        return reply.status, reply.read().decode()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, int, int]]:
    if why := containerd.unavailable_reason():
        pytest.skip(why)
    data = tmp_path_factory.mktemp("networking") / "data"
    data.mkdir()
    http_port, https_port = free_port(), free_port()
    options = (
        "--pod-cidr", POD_CIDR,
        "--pod-bridge", BRIDGE,
        "--service-cidr", SERVICE_CIDR,
        "--ingress-listen", f"127.0.0.1:{http_port}",
        "--ingress-tls-listen", f"127.0.0.1:{https_port}",
    )  # fmt: skip
    c = start_cluster(data, provider="cri", options=options)
    try:
        for name, replicas in (("web", 2), ("api", 1)):
            c.kubectl("apply", "-f", "-", input=APPS % {"name": name, "replicas": replicas})
        for name in ("web", "api"):
            c.kubectl("rollout", "status", f"deployment/{name}", "--timeout=120s", timeout=150)
        yield c, http_port, https_port
    finally:
        try:
            # Knative Services first: their Revisions would bring Deployments back.
            c.kubectl("delete", "ksvc", "--all", "--wait=true", timeout=120, check=False)
            c.kubectl("delete", "deployment", "--all", "--wait=true", timeout=120, check=False)
            c.kubectl("delete", "pod", "--all", "--wait=true", timeout=120, check=False)
        finally:
            stop_cluster(c)
            remove_pods(data, POD_CIDR, BRIDGE)
            remove_pod_network(BRIDGE)


def cluster_ip(c: Cluster, name: str, namespace: str = "default") -> str:
    return c.kubectl(
        "get", "service", name, "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"
    ).stdout


def test_services_get_cluster_ips_and_the_host_reaches_every_ready_pod_through_them(
    cluster: tuple[Cluster, int, int],
) -> None:
    c, _, _ = cluster
    ip = cluster_ip(c, "web")
    assert ip.startswith("10.97."), ip
    seen: set[str] = set()

    def both_pods() -> bool:
        status, body = get(ip, 80, "/index.html")
        assert status == 200
        seen.add(body.split()[1])
        return len(seen) == 2

    eventually(both_pods, "requests to the ClusterIP reaching both pods", timeout=30, interval=0)
    dns_service = json.loads(
        c.kubectl("get", "service", "kube-dns", "-n", "kube-system", "-o", "json").stdout
    )
    assert dns_service["spec"]["clusterIP"] == DNS_IP


def test_cluster_dns_answers_through_its_service_ip(cluster: tuple[Cluster, int, int]) -> None:
    c, _, _ = cluster
    query = dns.message.make_query("web.default.svc.cluster.local", dns.rdatatype.A)
    reply = dns.query.udp(query, DNS_IP, timeout=5)
    addresses = [item.address for rrset in reply.answer for item in rrset]
    assert addresses == [cluster_ip(c, "web")]
    reply = dns.query.tcp(
        dns.message.make_query("nope.default.svc.cluster.local", "A"), DNS_IP, timeout=5
    )
    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_a_pod_resolves_services_by_name_and_reaches_them(
    cluster: tuple[Cluster, int, int],
) -> None:
    c, _, _ = cluster
    c.kubectl("apply", "-f", "-", input=CLIENT)
    c.kubectl(
        "wait",
        "pod/client",
        "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=60s",
        timeout=90,
    )
    out = c.kubectl("logs", "client").stdout
    c.kubectl("delete", "pod", "client", "--wait=false")
    assert f"nameserver {DNS_IP}" in out
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in out
    assert "options ndots:5" in out
    lines = out.splitlines()
    assert any(line.startswith("web web-") for line in lines), out
    assert any(line.startswith("api api-") for line in lines), out
    # A short name through the search path, and a full one, to the ClusterIPs.
    assert f"web={cluster_ip(c, 'web')}" in lines, out
    assert f"api.default.svc.cluster.local={cluster_ip(c, 'api')}" in lines, out


INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: default}
spec:
  ingressClassName: nodeless
  tls:
  - hosts: [secure.example.test]
    secretName: secure-tls
  rules:
  - host: www.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /v1, pathType: Prefix, backend: {service: {name: api, port: {name: web}}}}
  - host: api.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
  - host: secure.example.test
    http:
      paths:
      - {path: /, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
"""


def test_the_ingress_gateway_routes_hosts_and_paths_over_http_and_tls(
    cluster: tuple[Cluster, int, int], tmp_path: Path
) -> None:
    c, http_port, https_port = cluster
    cert, key = gateway.self_signed_certificate("secure.example.test")
    (tmp_path / "secure.example.test.crt").write_bytes(cert)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "secure-tls", "namespace": "default"},
        "data": {
            "tls.crt": base64.b64encode(cert).decode(),
            "tls.key": base64.b64encode(key).decode(),
        },
    }
    c.kubectl("apply", "-f", "-", input=json.dumps(secret))
    c.kubectl("apply", "-f", "-", input=INGRESS)

    def routed() -> bool:
        return get("127.0.0.1", http_port, "/index.html", header_host="www.example.test")[0] == 200

    eventually(routed, "the Ingress to be served")
    assert get("127.0.0.1", http_port, "/index.html", header_host="www.example.test")[1].startswith(
        "web "
    )
    assert get("127.0.0.1", http_port, "/v1/index.html", header_host="www.example.test")[
        1
    ].startswith("api ")
    assert get("127.0.0.1", http_port, "/index.html", header_host="api.example.test")[1].startswith(
        "api "
    )
    assert get("127.0.0.1", http_port, "/index.html", header_host="other.example.test")[0] == 404

    # Trusting only the Secret's certificate: the handshake fails unless SNI chose it.
    context = ssl.create_default_context(cafile=str(tmp_path / "secure.example.test.crt"))

    def tls_routed() -> bool:
        # SNI and Host name the Ingress host; the address is the gateway's.
        try:
            with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname="secure.example.test") as tls:
                    tls.sendall(
                        b"GET / HTTP/1.1\r\nHost: secure.example.test\r\nConnection: close\r\n\r\n"
                    )
                    reply = b""
                    while chunk := tls.recv(65536):
                        reply += chunk
        except (ssl.SSLError, OSError):
            return False
        head, _, body = reply.partition(b"\r\n\r\n")
        return head.startswith(b"HTTP/1.1 200") and body.startswith(b"web ")

    eventually(tls_routed, "the TLS route with the Secret's certificate")

    def status_ip() -> str:
        return c.kubectl(
            "get", "ingress", "site", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"
        ).stdout

    assert eventually(status_ip, "the Ingress status") == "127.0.0.1"


def test_a_rolling_update_behind_the_gateway_fails_no_request(
    cluster: tuple[Cluster, int, int],
) -> None:
    c, http_port, _ = cluster
    c.kubectl("apply", "-f", "-", input=INGRESS)
    eventually(
        lambda: (
            get("127.0.0.1", http_port, "/index.html", header_host="www.example.test")[0] == 200
        ),
        "the Ingress to be served",
    )
    failures: list[str] = []
    served = 0
    done = threading.Event()

    def load() -> None:
        nonlocal served
        while not done.is_set() and served < 5000:
            try:
                status, body = get(
                    "127.0.0.1", http_port, "/index.html", header_host="www.example.test"
                )
            except OSError as err:
                failures.append(repr(err))
                continue
            if status != 200:
                failures.append(f"{status} {body[:80]}")
            served += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        c.kubectl("rollout", "restart", "deployment/web")
        c.kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=150)
    finally:
        done.set()
        worker.join(timeout=30)
    assert served > 0
    assert failures == [], f"{len(failures)} of {served} requests failed: {failures[:5]}"


SLEEPY = (
    (APPS % {"name": "sleepy", "replicas": 0}).replace(
        "metadata: {name: sleepy, namespace: default}\nspec:\n  replicas",
        "metadata:\n  name: sleepy\n  namespace: default\n  annotations:\n"
        "    nodeless.dev/scale-to-zero: 'true'\n    nodeless.dev/scale-to-zero-grace: 3s\n"
        "spec:\n  replicas",
        1,
    )
    + """
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: sleepy, namespace: default}
spec:
  ingressClassName: nodeless
  rules:
  - host: sleepy.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: sleepy, port: {number: 80}}}}
"""
)


def test_a_workload_scales_from_zero_on_the_first_request_and_back_when_idle(
    cluster: tuple[Cluster, int, int],
) -> None:
    c, http_port, _ = cluster
    assert "scale-to-zero" in SLEEPY
    c.kubectl("apply", "-f", "-", input=SLEEPY)

    def replicas() -> str:
        return c.kubectl("get", "deployment", "sleepy", "-o", "jsonpath={.spec.replicas}").stdout

    assert replicas() == "0"
    # The first request is held by the gateway until a pod is Ready.
    eventually(
        lambda: get("127.0.0.1", http_port, "/", header_host="sleepy.example.test")[0] != 404,
        "the Ingress route",
    )
    status, body = get(
        "127.0.0.1", http_port, "/index.html", header_host="sleepy.example.test", timeout=90
    )
    assert status == 200 and body.startswith("sleepy "), (status, body)
    assert replicas() == "1"
    # No more requests: back to zero after the grace period.
    eventually(lambda: replicas() == "0", "scale to zero when idle", timeout=60)
    reasons = c.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=sleepy", "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()  # fmt: skip
    assert {"ScaledFromZero", "ScaledToZero"} <= set(reasons), reasons


def test_kubectl_port_forward_to_a_service_reaches_one_of_its_pods(
    cluster: tuple[Cluster, int, int],
) -> None:
    c, _, _ = cluster
    local = free_port()
    # kubectl resolves svc/web to a ready pod and the Service port 80 to its
    # named targetPort (http: 8080), then forwards to that pod.
    argv, env = c.kubectl_command("port-forward", "svc/web", f"{local}:80")
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"Forwarding from 127.0.0.1:{local} -> 8080" in line, line
        status, body = get("127.0.0.1", local, "/index.html", timeout=20)
        assert status == 200 and body.startswith("web web-"), (status, body)
    finally:
        process.terminate()
        process.wait(timeout=20)


KNATIVE = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: greeter, namespace: default}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: 6s
    spec:
      containers:
      - image: registry.local/nodeless/busybox:1.36
        env: [{name: GREETING, value: "%(greeting)s"}]
        command:
        - sh
        - -c
        - >-
          mkdir -p /www && echo "$GREETING $K_REVISION" > /www/index.html
          && httpd -f -p $PORT -h /www & trap 'exit 0' TERM; wait
%(traffic)s
"""
SPLIT = """
  traffic:
  - {revisionName: greeter-00001, percent: 90}
  - {revisionName: greeter-00002, percent: 10, tag: canary}
"""


def test_a_knative_service_serves_revisions_split_90_10_and_they_scale_to_zero(
    cluster: tuple[Cluster, int, int],
) -> None:
    c, http_port, _ = cluster
    host = "greeter.default.example.com"

    def ready_revision() -> str:
        return c.kubectl(
            "get", "ksvc", "greeter", "-o", "jsonpath={.status.latestReadyRevisionName}"
        ).stdout

    c.kubectl("apply", "-f", "-", input=KNATIVE % {"greeting": "hello", "traffic": ""})
    eventually(lambda: ready_revision() == "greeter-00001", "the first Revision", timeout=90)
    c.kubectl("wait", "ksvc/greeter", "--for=condition=Ready", "--timeout=60s", timeout=90)
    table = c.kubectl("get", "ksvc", "greeter").stdout
    assert table.split("\n")[0].split() == [
        "NAME",
        "URL",
        "LATESTCREATED",
        "LATESTREADY",
        "READY",
        "REASON",
    ]
    assert f"http://{host}" in table and "greeter-00001" in table, table
    status, body = get("127.0.0.1", http_port, "/", header_host=host, timeout=60)
    assert (status, body.strip()) == (200, "hello greeter-00001")

    # A new template: a second Revision, which takes all traffic once Ready.
    c.kubectl("apply", "-f", "-", input=KNATIVE % {"greeting": "hi", "traffic": ""})
    eventually(lambda: ready_revision() == "greeter-00002", "the second Revision", timeout=90)
    eventually(
        lambda: (
            get("127.0.0.1", http_port, "/", header_host=host, timeout=60)[1].strip()
            == "hi greeter-00002"
        ),
        "traffic following the latest Ready Revision",
    )
    revisions = c.kubectl("get", "revisions", "-o", "name").stdout.split()
    assert revisions == [
        "revision.serving.knative.dev/greeter-00001",
        "revision.serving.knative.dev/greeter-00002",
    ]

    # 90/10 between them, over a bounded number of requests, counted.
    c.kubectl("apply", "-f", "-", input=KNATIVE % {"greeting": "hi", "traffic": SPLIT})
    eventually(
        lambda: (
            c.kubectl(
                "get", "ksvc", "greeter", "-o", "jsonpath={.status.traffic[*].percent}"
            ).stdout
            == "90 10"
        ),
        "the split in the Service's status",
    )
    counts = {"hello greeter-00001": 0, "hi greeter-00002": 0}
    for _ in range(100):
        status, body = get("127.0.0.1", http_port, "/", header_host=host, timeout=60)
        assert status == 200, (status, body)
        counts[body.strip()] += 1
    assert counts == {"hello greeter-00001": 90, "hi greeter-00002": 10}
    status, body = get("127.0.0.1", http_port, "/", header_host=f"canary-{host}", timeout=60)
    assert (status, body.strip()) == (200, "hi greeter-00002")

    # Idle past the window: both Revisions go to zero pods and stay Ready.
    def replicas(revision: str) -> str:
        return c.kubectl(
            "get", "deployment", f"{revision}-deployment", "-o", "jsonpath={.spec.replicas}"
        ).stdout

    eventually(
        lambda: replicas("greeter-00001") == "0" and replicas("greeter-00002") == "0",
        "both Revisions scaled to zero",
        timeout=60,
    )
    assert (
        c.kubectl(
            "get",
            "revision",
            "greeter-00001",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ).stdout
        == "True"
    )
    # And the next request wakes the one it is sent to.
    status, body = get("127.0.0.1", http_port, "/", header_host=f"canary-{host}", timeout=90)
    assert (status, body.strip()) == (200, "hi greeter-00002")
    c.kubectl("delete", "ksvc", "greeter", "--wait=true", timeout=120)


IN_CLUSTER = """
apiVersion: v1
kind: Pod
metadata: {name: incluster, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: registry.local/nodeless/busybox:1.36
    command:
    - sh
    - -c
    - >-
      env | grep -E '^(KUBERNETES|WEB)_' | sort;
      if echo | nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT > /dev/null;
      then echo api=reached; else echo api=unreached; fi;
      cd /var/run/secrets/kubernetes.io/serviceaccount && ls && echo "namespace=$(cat namespace)"
      && head -1 ca.crt && cut -c1-3 token
"""


def test_pods_find_the_api_server_through_the_kubernetes_service(
    cluster: tuple[Cluster, int, int],
) -> None:
    c, _, _ = cluster
    api_ip = cluster_ip(c, "kubernetes")
    assert api_ip == "10.97.0.1"
    c.kubectl("apply", "-f", "-", input=IN_CLUSTER)
    c.kubectl(
        "wait", "pod/incluster", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=60s",
        timeout=90,
    )  # fmt: skip
    out = c.kubectl("logs", "incluster").stdout.splitlines()
    c.kubectl("delete", "pod", "incluster", "--wait=false")
    # The kubelet's variables: the API server's always, and the namespace's Services.
    assert f"KUBERNETES_SERVICE_HOST={api_ip}" in out, out
    assert "KUBERNETES_SERVICE_PORT=443" in out, out
    assert f"KUBERNETES_PORT=tcp://{api_ip}:443" in out, out
    assert f"WEB_SERVICE_HOST={cluster_ip(c, 'web')}" in out, out
    assert "WEB_SERVICE_PORT_WEB=80" in out, out
    assert "api=reached" in out, out
    # What in-cluster clients read: the token, the cluster CA and the namespace.
    assert {"ca.crt", "namespace", "token"} <= set(out), out
    assert "namespace=default" in out, out
    assert "-----BEGIN CERTIFICATE-----" in out, out
    assert "eyJ" in out, out  # a JWT
    slice_ = json.loads(c.kubectl("get", "endpointslice", "kubernetes", "-o", "json").stdout)
    assert slice_["endpoints"][0]["addresses"] == ["10.91.0.1"]

    # TLS through the ClusterIP verifies against the cluster CA under the
    # Service's DNS name, as client-go's in-cluster config does.
    context = ssl.create_default_context(cafile=str(c.data_dir / "pki" / "ca.crt"))
    token = (c.data_dir / "pki" / "tokens").read_text().split(",")[0]
    with socket.create_connection((api_ip, 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="kubernetes.default.svc") as tls:
            tls.sendall(
                b"GET /version HTTP/1.1\r\nHost: kubernetes.default.svc\r\n"
                + f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
            )
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert b'"gitVersion"' in reply
