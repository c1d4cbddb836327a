#!/usr/bin/env bash
# hetserve's container images (docker/images.list): `make images` builds them, `make push
# REGISTRY=host:port` pushes them.
#
#   bash scripts/images.sh build            # every image of docker/images.list buildable here
#   bash scripts/images.sh push REGISTRY    # the built ones to REGISTRY[/path]; digests written
#
# Environment:
#   ENGINE       the container engine command (default: podman, with --runtime runc when runc
#                is installed; else docker)
#   BASE         auto | official | local: the base images. official: the Dockerfiles' defaults
#                (python:3.11.10-slim-bookworm, busybox); local: a Debian bookworm base made
#                here with debootstrap (docker/base/build-python-base.sh, podman only) for
#                machines that reach no image registry; auto (default): official when present
#                or pullable, else local.
#   GPU_IMAGES   auto | yes | no: the GPU Triton image (FROM NVIDIA's ~15 GB Triton image).
#                auto (default): built when that base image is present or nvidia-smi exists;
#                skipped otherwise, with a message.
#   BUILD_FLAGS  more `build` flags (default with podman: host network and the ulimits these
#                machines need)
#   TLS_VERIFY   push: false for a plain-HTTP registry (default true)
#   DIGESTS_FILE push: where to write "<pushed image> <digest>" lines (default
#                build/images/digests.txt); pin them in the chart with image.digest.
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=docker/images.list
LOCAL_PYTHON_BASE=localhost/hetserve/python:3.11-slim-bookworm
OFFICIAL_PYTHON_BASE=python:3.11.10-slim-bookworm
TRITON_BASE=nvcr.io/nvidia/tritonserver:24.10-py3

if [ -n "${ENGINE:-}" ]; then
    read -r -a engine <<< "$ENGINE"
elif command -v podman >/dev/null; then
    engine=(podman)
    if command -v runc >/dev/null; then engine+=(--runtime runc); fi
elif command -v docker >/dev/null; then
    engine=(docker)
else
    echo "images: neither podman nor docker is installed" >&2
    exit 1
fi
if [ -n "${BUILD_FLAGS+set}" ]; then
    read -r -a build_flags <<< "$BUILD_FLAGS"
elif [ "${engine[0]}" = podman ]; then
    build_flags=(--network=host --ulimit=nofile=1024:1024 --ulimit=nproc=1024:1024)
else
    build_flags=()
fi

have_image() { "${engine[@]}" image inspect "$1" >/dev/null 2>&1; }
have_or_pull() { have_image "$1" || "${engine[@]}" pull --quiet "$1" >/dev/null 2>&1; }

# image dockerfile context kind: the lines of docker/images.list
images() { grep -v '^\s*\(#\|$\)' "$LIST"; }

base_args() {  # the build arguments naming base images, for the chosen BASE
    case "${BASE:-auto}" in
        official) return 0 ;;
        local) ;;
        auto)
            if have_or_pull "$OFFICIAL_PYTHON_BASE"; then return 0; fi
            echo "images: $OFFICIAL_PYTHON_BASE cannot be pulled here: using the local Debian base" >&2 ;;
        *) echo "images: BASE must be auto, official or local" >&2; exit 1 ;;
    esac
    nice -n 10 bash docker/base/build-python-base.sh "$LOCAL_PYTHON_BASE" >&2
    # The stand-in has cp, ln and sleep, all a model image's consumers run.
    echo "--build-arg=PYTHON_IMAGE=$LOCAL_PYTHON_BASE --build-arg=BUSYBOX_IMAGE=$LOCAL_PYTHON_BASE"
}

gpu_buildable() {
    case "${GPU_IMAGES:-auto}" in
        yes) return 0 ;;
        no) return 1 ;;
        *) have_image "$TRITON_BASE" || command -v nvidia-smi >/dev/null ;;
    esac
}

build() {
    local args image dockerfile context kind
    read -r -a args <<< "$(base_args)"
    while read -r image dockerfile context kind; do
        if [ "$kind" = gpu ] && ! gpu_buildable; then
            echo "skipped $image: needs $TRITON_BASE (a GPU host; GPU_IMAGES=yes to force)"
            continue
        fi
        if [ ! -d "$context" ]; then
            echo "skipped $image: no $context/ (make gpu-repo writes model_repo_cuda/)"
            continue
        fi
        local started=$SECONDS
        nice -n 10 "${engine[@]}" build "${build_flags[@]}" "${args[@]}" \
            --file "$dockerfile" --tag "$image" "$context"
        echo "built $image in $((SECONDS - started)) s"
    done < <(images)
}

push() {
    local registry=${1:?usage: scripts/images.sh push REGISTRY}
    local digests=${DIGESTS_FILE:-build/images/digests.txt}
    local tls=() image target digest
    mkdir -p "$(dirname "$digests")"
    : > "$digests"
    if [ "${TLS_VERIFY:-true}" = false ] && [ "${engine[0]}" = podman ]; then
        tls=(--tls-verify=false)
    fi
    while read -r image _; do
        if ! have_image "$image"; then
            echo "not pushed $image: not built here"
            continue
        fi
        target="$registry/$image"
        if [ "${engine[0]}" = podman ]; then
            "${engine[@]}" push --quiet "${tls[@]}" --digestfile "$digests.one" "$image" "$target"
            digest=$(cat "$digests.one")
            rm -f "$digests.one"
        else
            "${engine[@]}" tag "$image" "$target"
            "${engine[@]}" push --quiet "$target" >/dev/null
            digest=$("${engine[@]}" image inspect --format '{{index .RepoDigests 0}}' "$target")
            digest=${digest##*@}
        fi
        echo "$target $digest" >> "$digests"
        echo "pushed $target@$digest"
    done < <(images)
    echo "digests in $digests"
}

case "${1:-}" in
    build) build ;;
    push) shift; push "$@" ;;
    *) echo "usage: scripts/images.sh build | push REGISTRY" >&2; exit 2 ;;
esac
