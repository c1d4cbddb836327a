#!/usr/bin/env bash
# A local stand-in for the official python:3.11.10-slim-bookworm image, for machines that reach
# Debian's mirror and PyPI but no image registry (make test-containers).
#
# debootstrap (minbase) makes a Debian 12 "bookworm" root filesystem, the Debian release of the
# official image, with Debian's Python 3.11 (3.11.2: bookworm's; the official image compiles
# 3.11.10 from python.org's source, which these machines cannot reach). Same Debian, same
# Python minor version, hence the same ABI (cp311 wheels) and the same Triton Python-backend
# stub (python_backend_stubs/3.11). It is laid out like the official image where the
# Dockerfiles rely on it: python, python3, pip, pip3 in /usr/local/bin, pip may install
# system-wide (no PEP 668 marker), the shared libpython3.11 the stub links against, CA
# certificates, LANG=C.UTF-8, CMD ["python3"]. Imported with `podman import`.
#
# The host's own extra CA certificates (/usr/local/share/ca-certificates) are added to the
# image's trust store: where the network intercepts TLS (as on these machines), that is what
# lets pip inside an image build reach PyPI. An official image on a host without interception
# needs none.
#
#   bash docker/base/build-python-base.sh [IMAGE]   # default localhost/hetserve/python:3.11-slim-bookworm
#
# Does nothing when the image exists already (the cache between runs); FORCE=1 rebuilds.
set -euo pipefail
IMAGE=${1:-localhost/hetserve/python:3.11-slim-bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3.11,libpython3.11,python3-pip,python3-setuptools,python3-wheel,ca-certificates,netbase,tzdata

if [ "${FORCE:-0}" != 1 ] && podman image exists "$IMAGE"; then
    echo "base image $IMAGE: cached"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap missing (apt-get install -y debootstrap)" >&2; exit 1; }

ROOTFS=$(mktemp -d /var/tmp/hetserve-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS" "$ROOTFS.log"' EXIT
trap 'exit 1' INT TERM
echo "debootstrap $SUITE into $ROOTFS"
nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
    > "$ROOTFS.log" 2>&1 || { tail -30 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"

# The official image's commands, and pip allowed to install into the system Python.
for name in python python3; do ln -sf /usr/bin/python3.11 "$ROOTFS/usr/local/bin/$name"; done
for name in pip pip3; do
    printf '#!/bin/sh\nexec /usr/bin/python3.11 -m pip "$@"\n' > "$ROOTFS/usr/local/bin/$name"
    chmod 755 "$ROOTFS/usr/local/bin/$name"
done
rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates >/dev/null
fi
# Slim: no package lists, caches or documentation.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
PY_VERSION=$(chroot "$ROOTFS" python3 -c 'import platform; print(platform.python_version())')

tar --numeric-owner -C "$ROOTFS" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PYTHON_VERSION=$PY_VERSION" \
    --change 'CMD ["python3"]' \
    --message "debootstrap $SUITE minbase + Debian python $PY_VERSION" \
    - "$IMAGE" >/dev/null
echo "base image $IMAGE: built (Debian $SUITE, Python $PY_VERSION)"
