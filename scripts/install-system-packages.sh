#!/usr/bin/env bash
# System packages Nodeless and its tests need, installed when missing.
# Debian/Ubuntu only; as root or through sudo.
set -euo pipefail

packages=(python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A Python with venv already working needs nothing more.
if python3 -c 'import venv, ensurepip' 2>/dev/null; then missing=(); fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}"
