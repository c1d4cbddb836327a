#!/usr/bin/env bash
# Headless Locust against a running gateway on this machine, for a bounded time.
#
#   bash tests/load/run_locust.sh URL USERS TIME      e.g. http://127.0.0.1:8080 20 30s
#
# Writes <results>/locust_{stats,stats_history,failures,exceptions}.csv and report.html, where
# <results> is $HETSERVE_LOAD_RESULTS (default runs/load/<UTC timestamp>), then prints
# requests/s, p50/p95/p99 and failures per request name. Exits non-zero when any request failed.
# With HETSERVE_LOAD_RESULTS_DIR set (make load: bench/results) the figures also go to
# $HETSERVE_LOAD_RESULTS_DIR/locust-<machine>.json with their provenance.
# Only loopback targets are accepted: this is a load generator, not a tool for other hosts.
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 URL USERS TIME   (e.g. http://127.0.0.1:8080 20 30s)" >&2
    exit 2
fi
url=$1 users=$2 run_time=$3

host=$(sed -E 's#^https?://(\[[^]]+\]|[^:/]+).*#\1#' <<<"$url")
case "$host" in
    127.*|localhost|\[::1\]) ;;
    *) echo "refusing to load $url: only loopback targets (127.0.0.0/8, localhost, [::1])" >&2
       exit 2 ;;
esac
if ! [[ $users =~ ^[1-9][0-9]*$ ]]; then
    echo "USERS must be a positive integer, got '$users'" >&2
    exit 2
fi
if ! [[ $run_time =~ ^[0-9]+[smh]?$ ]]; then
    echo "TIME must look like 30s, 5m or 1h, got '$run_time'" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv_bin=${VENV_BIN:-$root/.venv/bin}
results=${HETSERVE_LOAD_RESULTS:-$root/runs/load/$(date -u +%Y%m%dT%H%M%SZ)}
spawn_rate=${HETSERVE_LOAD_SPAWN_RATE:-$users}
mkdir -p "$results"

echo "locust: $users users for $run_time against $url; results in $results"
status=0
"$venv_bin/locust" -f "$here/locustfile.py" --headless --only-summary \
    --host "$url" --users "$users" --spawn-rate "$spawn_rate" --run-time "$run_time" \
    --stop-timeout 10 --csv "$results/locust" --html "$results/report.html" \
    --loglevel WARNING || status=$?

summary_args=("$results/locust_stats.csv")
if [[ -n ${HETSERVE_LOAD_RESULTS_DIR:-} ]]; then
    summary_args+=(--results-dir "$HETSERVE_LOAD_RESULTS_DIR"
                   --command "bash tests/load/run_locust.sh $url $users $run_time")
fi
"$venv_bin/python" "$here/locust_summary.py" "${summary_args[@]}" || status=1
exit "$status"
