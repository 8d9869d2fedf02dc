#!/usr/bin/env bash
# `make run`: start Nodeless, apply the demo, tell the user what to type next.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data}
LISTEN=${LISTEN:-127.0.0.1:6443}
BIN=.venv/bin
mkdir -p "$DATA"
log="$DATA/nodeless.log"

"$BIN/nodeless" up --data-dir "$DATA" --listen "$LISTEN" --provider none >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q ready "$log" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
cat "$log"
export KUBECONFIG="$PWD/$DATA/kubeconfig"
echo "Note: this build serves the Kubernetes API alone (provider 'none'): objects are stored and"
echo "watched, but no pods run yet. The instance providers come in the next releases."
"$BIN/kubectl" apply -f examples/
cat <<MSG

Nodeless is running (logs in $log). In another shell:
  export KUBECONFIG=$KUBECONFIG PATH=$PWD/$BIN:\$PATH
  kubectl get all
  kubectl get deployments -o wide
  kubectl api-resources
Press Ctrl-C here to stop it.
MSG
wait $pid
