#!/usr/bin/env bash
# System packages Nodeless and its tests need, installed when missing.
# Debian/Ubuntu only; as root or through sudo. Idempotent, and quick (no apt)
# when everything is already installed.
set -euo pipefail

# Real pods: containerd's CRI, runc and the CNI plugins. busybox-static is
# what the pause image and test images are built from; docker-registry is the
# local registry tests feed with those images. conntrack clears stale UDP
# flows when a Service's endpoints change; nftables applies the Service rules.
packages=(containerd runc containernetworking-plugins busybox-static docker-registry conntrack nftables)
# A Python with venv already working needs no python3-venv.
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

# Without apt or root, say what is missing and go on: Nodeless then runs on
# the simulated provider and the tests that need containerd are skipped.
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-packages: no apt-get here; please install: ${missing[*]}" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-system-packages: not root and no sudo; please install: ${missing[*]}" >&2
    exit 0
  fi
  sudo="sudo"
fi

echo "install-system-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
