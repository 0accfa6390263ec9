#!/usr/bin/env bash
# Report benchmark: 1,000,000 settled usage records over 30 days, then the Admin API's
# 30-day daily reports over HTTP (release build), timed by curl; prints the median and the
# slowest of the runs. Usage: bench/reports.sh [records, default 1000000] [runs, default 20]
# Needs: python3 (seeding), curl.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-1000000}"
runs="${2:-20}"
cargo build --release -q -p tollgate --bin tollgate

work="$(mktemp -d)"
cleanup() { kill "${gate_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=19003
gate() { target/release/tollgate --data-dir "$work/data" "$@"; }
export RUST_LOG=warn

gate migrate 2>/dev/null
gate workspaces create Research >/dev/null 2>&1
gate workspaces create Support >/dev/null 2>&1
for workspace in Default Default Research Research Support; do
  gate keys create --workspace "$workspace" --name bench >/dev/null 2>&1
done
admin_key="$(gate admin-keys create 2>/dev/null)"
python3 bench/seed_usage.py "$work/data/tollgate.sqlite" "$records"

gate serve --listen "127.0.0.1:$port" >/dev/null 2>&1 &
gate_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

end="$(date -u +%Y-%m-%dT00:00:00Z)"
start="$(date -u -d "$end - 30 days" +%Y-%m-%dT00:00:00Z)"
measure() { # name path
  local times=()
  curl -sf -o /dev/null -H "x-api-key: $admin_key" "http://127.0.0.1:$port$2" # warm-up
  for _ in $(seq 1 "$runs"); do
    times+=("$(curl -sf -o /dev/null -w '%{time_total}' -H "x-api-key: $admin_key" "http://127.0.0.1:$port$2")")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v name="$1" '
    { t[NR] = $1 * 1000 }
    END { printf "| %-44s | %8.1f ms | %8.1f ms |\n", name, t[int((NR + 1) / 2)], t[NR] }'
}
window="starting_at=$start&ending_at=$end&limit=31"
echo "| report (30 days, $records records)             |   median |  slowest |"
echo "|----------------------------------------------|----------|----------|"
measure "usage, 1d, group_by model" "/v1/organizations/usage_report/messages?$window&group_by[]=model"
measure "usage, 1d, group_by model, workspace, key" "/v1/organizations/usage_report/messages?$window&group_by[]=model&group_by[]=workspace_id&group_by[]=api_key_id"
measure "cost, 1d, group_by description" "/v1/organizations/cost_report?$window&group_by[]=description"
measure "cost, 1d, group_by workspace, description" "/v1/organizations/cost_report?$window&group_by[]=workspace_id&group_by[]=description"
measure "usage, 1h, 7 days, group_by model" "/v1/organizations/usage_report/messages?starting_at=$start&bucket_width=1h&limit=168&group_by[]=model"
