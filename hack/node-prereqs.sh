#!/usr/bin/env bash
# Installs what the real test node runs beside the kubelet (docs/adr/0014-real-node.md):
# Debian's containerd, runc, CNI plugins, iptables and ip. Does nothing when they are there.
set -euo pipefail

# program or file -> the Debian package that brings it
declare -A wanted=(
  [/usr/bin/containerd]=containerd
  [/usr/sbin/runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [/usr/sbin/iptables]=iptables
  [/usr/sbin/ip]=iproute2
)

missing=()
for path in "${!wanted[@]}"; do
  [[ -x $path ]] || missing+=("${wanted[$path]}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "the real test node needs ${missing[*]} (Debian packages); run as root, or install them: apt-get install ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "the real test node needs ${missing[*]}, and this machine has no apt-get: install them by hand" >&2
  exit 1
fi
echo "installing ${missing[*]} for the real test node" >&2
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed ${missing[*]} in $((SECONDS - start))s" >&2
