#!/usr/bin/env bash
# promtool, the Prometheus project's checker, for the monitoring checks
# (tests/unit/deploy/test_monitoring_config.py: `promtool check config`, `promtool check rules`
# and `promtool test rules` on the alert rules). Taken from Debian's `prometheus` package
# (apt-get download, no installation: nothing is started or registered), extracted as
# $VENV/bin/promtool.
#
#   bash scripts/promtool.sh .venv
set -euo pipefail
venv="${1:-.venv}"
target="$venv/bin/promtool"
if [ -x "$target" ] && "$target" --version >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "apt-get and dpkg-deb are needed to fetch promtool (Debian's prometheus package)" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"  # apt-get download writes as the _apt user
if ! (cd "$work" && apt-get download -qq prometheus 2>/dev/null); then
    apt-get update -qq
    (cd "$work" && apt-get download -qq prometheus)
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/promtool" "$target"
"$target" --version 2>&1 | head -1
