#!/usr/bin/env bash
# What `make test-containers` needs besides the virtualenv: podman with the runc runtime (crun
# fails on these machines' cgroups and rlimits), debootstrap (the local Debian base image), and
# the CNCF distribution registry from Debian's docker-registry package.
# Installs podman, runc and debootstrap with apt when missing and we are root; otherwise says
# what is missing. docker-registry is not installed: its package would add a system service
# listening on every address (:5000); the binary alone is unpacked from the package
# (`apt-get download`, `dpkg-deb -x`) into the virtualenv, and the tests run it on loopback
# with a configuration of their own (tests/containers/registry.py).
#
#   bash scripts/container-deps.sh .venv
set -euo pipefail
venv="${1:-.venv}"
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing system packages: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing system packages: ${need[*]} (install them with apt-get as root)" >&2
        exit 1
    fi
fi

registry="$venv/bin/docker-registry"
if [ ! -x "$registry" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download -qq docker-registry 2>/dev/null); then
        [ "$(id -u)" = 0 ] && apt-get update -qq
        (cd "$work" && apt-get download -qq docker-registry)
    fi
    dpkg-deb -x "$work"/docker-registry_*.deb "$work/root"
    install -m 0755 "$work/root/usr/bin/docker-registry" "$registry"
    echo "docker-registry $("$registry" --version | awk '{print $NF}') unpacked into $registry"
fi
