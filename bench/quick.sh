#!/usr/bin/env bash
# Quick overhead check: the same load (wrk) sent directly to the fake upstream and through
# tollgate (full auth, reservation, upstream call, metering and settlement on SQLite).
# Usage: bench/quick.sh [seconds per run, default 10]
# Needs: wrk (apt-get install wrk). Builds release binaries first.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p tollgate -p tollgate-testkit --bins

work="$(mktemp -d)"
cleanup() { kill "${fake_pid:-}" "${gate_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

fake_port=19001; gate_port=19002
target/release/fake-upstream --listen "127.0.0.1:$fake_port" >/dev/null &
fake_pid=$!
cat > "$work/tollgate.toml" <<TOML
listen = "127.0.0.1:$gate_port"
data_dir = "$work/data"
[providers.fake]
kind = "anthropic"
base_url = "http://127.0.0.1:$fake_port"
[models.bench-model]
provider = "fake"
upstream_model = "claude-sonnet-4-6"
input = "3"
output = "15"
TOML
export RUST_LOG=warn
target/release/tollgate --config "$work/tollgate.toml" credits grant --amount 1000000 --kind promotional >/dev/null 2>&1
key="$(target/release/tollgate --config "$work/tollgate.toml" keys create --name bench 2>/dev/null)"
target/release/tollgate --config "$work/tollgate.toml" serve >/dev/null 2>&1 &
gate_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$gate_port/health" >/dev/null && break; sleep 0.1; done

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"bench-model","max_tokens":64,"messages":[{"role":"user","content":"Hello, world"}]}'
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "$key"
LUA

run() { # name url connections
  local out; out="$(wrk -t "$(( $3 < 2 ? 1 : 2 ))" -c "$3" -d "${duration}s" --latency -s "$work/post.lua" "$2/v1/messages")"
  local rps p50 p99
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  printf '| %-22s | %5s | %10s | %9s | %9s |\n' "$1" "$3" "$rps" "$p50" "$p99"
}

echo "| path                   | conns |      req/s |       p50 |       p99 |"
echo "|------------------------|-------|------------|-----------|-----------|"
for connections in 1 32; do
  run "direct -> fake" "http://127.0.0.1:$fake_port" "$connections"
  run "tollgate -> fake" "http://127.0.0.1:$gate_port" "$connections"
done
echo
echo "ledger after the runs:"
target/release/tollgate --config "$work/tollgate.toml" credits balance
