#!/usr/bin/env bash
# What `make test-containers` needs besides the virtualenv: podman with the runc runtime (crun
# fails on these machines' cgroups and rlimits) and debootstrap (the local Debian base image).
# Installs them with apt when missing and we are root; otherwise says what is missing.
set -euo pipefail
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
    echo "missing system packages: ${need[*]} (install them with apt-get as root)" >&2
    exit 1
fi
