#!/usr/bin/env bash
# What a request costs tollgate in instructions, counted by callgrind: a figure that does
# not move with the neighbours of a shared machine, as wall-clock throughput does.
#
# For each variant, tollgate (release build, SQLite, the fake upstream) runs under
# `valgrind --tool=callgrind` twice, on a fresh data directory each time, serving SMALL and
# then LARGE sequential non-streaming requests over one keep-alive connection, and stops
# with SIGTERM. Start-up and shutdown are the same in both runs, so
# (instructions of LARGE − instructions of SMALL) ÷ (LARGE − SMALL) is the cost of one
# request, every thread counted (HTTP, metering, the SQLite writer and syncer).
#
# Variants: `off` (the default: no metrics recorder, no trace export), `metrics` (the
# Prometheus recorder installed, `metrics_token` set), `metrics+traces` (the same and OTLP
# export with 1 % of traces sampled).
#
# Usage: bench/instructions.sh [SMALL] [LARGE]     (defaults 200 and 1200; VARIANTS="off metrics"
# runs only those)
# SKIP_BUILD=1 uses the release binaries as they are; CARGO_TARGET_DIR is honoured.
set -euo pipefail
source "$(dirname "$0")/common.sh"
small="${1:-200}"
large="${2:-1200}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt install valgrind)" >&2; exit 1; }
bin="${CARGO_TARGET_DIR:-target}/release"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p tollgate -p tollgate-testkit --bins
work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

fake_port=19131; otlp_port=19132; gate_port=19133
"$bin"/fake-upstream --listen "127.0.0.1:$fake_port" >/dev/null &
pids+=($!)
# Traces go to a listener that takes every POST: a second fake upstream (404 for
# /v1/traces; what tollgate does to export is the same whatever the collector answers).
"$bin"/fake-upstream --listen "127.0.0.1:$otlp_port" >/dev/null &
pids+=($!)

# One run: a fresh data directory, `count` requests under callgrind; prints the total
# instructions.
run() {
  local count="$1"; shift
  local data="$work/data-$RANDOM"
  { printf 'listen = "127.0.0.1:%s"\ndata_dir = "%s"\n' "$gate_port" "$data"
    bench_model_and_tier "$fake_port"; } > "$work/tollgate.toml"
  RUST_LOG=error "$bin"/tollgate --config "$work/tollgate.toml" credits grant --amount 100000000 --kind promotional >/dev/null 2>&1
  local key
  key="$(RUST_LOG=error "$bin"/tollgate --config "$work/tollgate.toml" keys create --name bench)"
  local out="$work/callgrind.out"
  env RUST_LOG=error "$@" valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin"/tollgate --config "$work/tollgate.toml" serve >/dev/null 2>&1 &
  local gate=$!
  for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$gate_port/health" && break
    kill -0 "$gate" 2>/dev/null || { echo "tollgate did not start" >&2; exit 1; }
    sleep 0.2
  done
  python3 - "$gate_port" "$key" "$count" <<'PY'
import http.client, json, sys
port, key, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = json.dumps({"model": "bench-model", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Hello"}]})
headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(count):
    connection.request("POST", "/v1/messages", body, headers)
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"status {response.status}")
PY
  kill -TERM "$gate"
  wait "$gate" || true
  awk '/^(summary|totals):/ { print $2; exit }' "$out"
  rm -rf "$data" "$out"
}

printf '| variant | instructions a request | vs off |\n|---|---|---|\n'
base=""
for variant in ${VARIANTS:-off metrics metrics+traces}; do
  case "$variant" in
    off) settings=() ;;
    metrics) settings=(TOLLGATE_OBSERVABILITY__METRICS_TOKEN=bench) ;;
    metrics+traces) settings=(TOLLGATE_OBSERVABILITY__METRICS_TOKEN=bench
      TOLLGATE_OBSERVABILITY__OTLP_ENDPOINT="http://127.0.0.1:$otlp_port"
      TOLLGATE_OBSERVABILITY__TRACE_SAMPLE_RATIO=0.01) ;;
  esac
  low="$(run "$small" "${settings[@]}")"
  high="$(run "$large" "${settings[@]}")"
  per=$(( (high - low) / (large - small) ))
  [ -n "$base" ] || base="$per"
  printf '| %s | %s | %+.1f %% |\n' "$variant" "$per" "$(echo "($per - $base) * 100 / $base" | bc -l)"
done
