#!/usr/bin/env bash
# `make run`: start Nodeless, apply the demo, tell the user what to type next.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data}
LISTEN=${LISTEN:-127.0.0.1:6443}
BIN=.venv/bin
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
log="$DATA/nodeless.log"

# cri: real pods on a containerd Nodeless runs (as root; else it falls back to simulated).
PROVIDER=${PROVIDER:-cri}
ZONES=${ZONES:-zone-a,zone-b}
"$BIN/nodeless" up --data-dir "$DATA" --listen "$LISTEN" --provider "$PROVIDER" --zones "$ZONES" >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q ready "$log" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
cat "$log"
export KUBECONFIG="$DATA/kubeconfig"
"$BIN/kubectl" apply -f examples/
cat <<MSG

Nodeless is running (logs in $log). In another shell:
  export KUBECONFIG=$KUBECONFIG PATH=$PWD/$BIN:\$PATH
  kubectl get nodes -L topology.kubernetes.io/zone
  kubectl -n demo get pods -o wide
  kubectl -n demo describe pod web-1
  kubectl -n demo get instances
Press Ctrl-C here to stop it.
MSG
wait $pid
