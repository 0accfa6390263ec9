#!/usr/bin/env bash
# Gateway overhead, side by side, in one run: the same Messages request sent by wrk
#   direct   -> fake upstream
#   nginx    -> fake upstream      (one plain proxy hop: the floor for any gateway)
#   tollgate -> fake upstream      (auth, rate limits, reservation, metering, settlement; SQLite)
#   pg-x1    -> fake upstream      (the same on PostgreSQL + Redis, one replica)
#   pg-x3    -> nginx -> 3 replicas (PostgreSQL + Redis, round-robin behind nginx)
#   pg-x1-orgs, pg-x3-orgs          (the same, the load spread over 8 organizations)
#   litellm  -> fake upstream      (LiteLLM proxy, when it can be installed)
#   direct-embed, nginx-embed, tollgate-embed: OpenAI's POST /v1/embeddings the same three
#            ways (tollgate: an `openai` deployment, priced per input token, SQLite)
#   direct-gemini   -> fake Gemini API (the same prompt as Gemini's generateContent)
#   tollgate-gemini -> fake Gemini API (the Messages request to a `gemini` deployment,
#            translated both ways and metered from usageMetadata; SQLite)
#   direct-bedrock, tollgate-bedrock -> fake Bedrock (InvokeModel; tollgate signs each request
#            with SigV4, which the bench's fake does not check, since wrk cannot sign)
#   direct-vertex, tollgate-vertex -> fake Vertex AI (rawPredict; tollgate gets its OAuth2
#            token by the JWT bearer grant and keeps it; wrk sends one the fake issued)
#   tollgate-responses -> fake upstream (the prompt as OpenAI's POST /v1/responses, translated
#            to Messages and back, the response stored as OpenAI's default `store` asks;
#            measured against direct); tollgate-responses-unstored: the same with store false
#   tollgate-file -> fake upstream (the Messages request with a document named by file_id,
#            uploaded to tollgate beforehand: its provider id looked up and put in the body)
# at concurrency 1, 32 and 256, DURATION seconds each, 3 runs; prints a markdown table of
# medians (req/s, p50, p99, p99.9, added p50/p99 against direct, peak RSS).
#
# Usage: bench/run.sh [DURATION_SECONDS (default 10)] [RUNS (default 3)]
# Knobs (environment): CONCURRENCIES="1 32 256", STREAMS=10000 (0 skips the streaming
# scenario), LITELLM=0 skips LiteLLM, REPLICAS=0 skips the PostgreSQL + Redis rows,
# EMBEDDINGS=0 skips the embeddings rows, GEMINI=0 the Gemini rows, CLOUDS=0 the Bedrock
# and Vertex rows, SURFACES=0 the Responses and Files rows, SSE=0 the streaming throughput
# rows (direct-sse, nginx-sse, tollgate-sse: the Messages request with "stream": true),
# PROFILE=SECONDS also samples tollgate's CPU with perf (call graphs by DWARF) while wrk runs
# the Messages request at PROFILE_CONNS connections (default 32) for that long, after the table's runs, and writes
# the report of where its time went (self time by symbol, then the hottest call chains) to
# PROFILE_OUT (default bench/profile.txt); PROFILE_SSE=1 profiles the request as a stream.
# SELF_TIME=N also prints tollgate's own time a request as its server-timing header reports
# it (to the response head, less the upstream call), over N sequential requests.
# UPSTREAM_LATENCY_MS=N makes the fake upstream wait N ms before each answer, as a real model
# does: the direct row then shows that wait, and tollgate's added latency is what it does
# around it (work it overlaps with the upstream call no longer counts).
# SKIP_BUILD=1 uses the release binaries as they are. DATABASE_URL and REDIS_URL name the
# servers (default: the local ones); each run uses a fresh schema and key prefix.
# A quick check: CONCURRENCIES="1 32" STREAMS=0 LITELLM=0 bench/run.sh 5 1
# Installs what it needs: wrk and nginx (apt), LiteLLM (pip, into bench/.venv).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."
duration="${1:-10}"
runs="${2:-3}"
concurrencies="${CONCURRENCIES:-1 32 256}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; sleep 2
  # Whatever has not finished its graceful shutdown by now is stopped for good, so that no
  # server outlives the run and holds its port.
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$work"
  [ "${replicas:-0}" = 0 ] || psql -q "$database_url" -c "DROP SCHEMA IF EXISTS $bench_schema CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

need_apt() { command -v "$1" >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; }; }
need_apt wrk wrk
need_apt nginx nginx-light
if [ "${LITELLM:-1}" != 0 ] && [ ! -x bench/.venv/bin/litellm ]; then
  echo "installing LiteLLM into bench/.venv (once)…" >&2
  (python3 -m venv bench/.venv && bench/.venv/bin/pip install -q 'litellm[proxy]==1.99.4') >&2 || echo "LiteLLM could not be installed; its rows are skipped" >&2
fi
bin="${CARGO_TARGET_DIR:-target}/release"
echo "building release binaries…" >&2
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p tollgate -p tollgate-testkit --bins
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

fake_port=19101; nginx_port=19102; gate_port=19103; litellm_port=19104; slow_port=19105
gemini_port=19106; bedrock_port=19107; vertex_port=19108
gemini_key="AIzaSyFakeGeminiKeyForTollgateTests01"  # FAKE_GEMINI_API_KEY, the one the fake takes
pg_port=19110; lb_port=19120  # replicas listen on pg_port+1..3, nginx balances them on lb_port
replicas="${REPLICAS:-1}"
database_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
bench_schema="bench_$$_$(date +%s)"
streams="${STREAMS:-10000}"
# Each stream through tollgate holds two sockets in it (the client's and the upstream's).
fd_limit="$(ulimit -n)"
if [ "$fd_limit" != unlimited ] && [ $(( 2 * streams + 256 )) -gt "$fd_limit" ]; then
  echo "the open-file limit is $fd_limit (hard limit $(ulimit -Hn)): $streams streams need" \
    "$(( 2 * streams + 256 )); running $(( (fd_limit - 256) / 2 )) instead" >&2
  streams=$(( (fd_limit - 256) / 2 ))
fi
"$bin"/fake-upstream --listen "127.0.0.1:$fake_port" --gemini-listen "127.0.0.1:$gemini_port" \
  --bedrock-listen "127.0.0.1:$bedrock_port" --vertex-listen "127.0.0.1:$vertex_port" \
  --vertex-service-account-file "$work/vertex-service-account.json" --latency-ms "${UPSTREAM_LATENCY_MS:-0}" >/dev/null &
pids+=($!)
for _ in $(seq 1 300); do [ -s "$work/vertex-service-account.json" ] && break; sleep 0.1; done
# For the streaming scenario: a second between events (about fifteen), so that every stream
# is still running when the last one starts; stream-load reports how many were streaming
# at once (peak_streaming), which is what the memory peak is the peak of.
stream_delay_ms=1000
"$bin"/fake-upstream --listen "127.0.0.1:$slow_port" --event-delay-ms "$stream_delay_ms" --output-tokens 20 >/dev/null &
pids+=($!)

# nginx: one proxy hop with upstream keep-alive, as a production config would have.
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  upstream fake { server 127.0.0.1:$fake_port; keepalive 512; }
  upstream replicas {
    server 127.0.0.1:$(( pg_port + 1 )); server 127.0.0.1:$(( pg_port + 2 )); server 127.0.0.1:$(( pg_port + 3 ));
    keepalive 512;
  }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
  server {
    listen 127.0.0.1:$lb_port;
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)

# tollgate: full metering on SQLite, limits high enough that the benchmark measures
# overhead, not refusals.
{ cat <<TOML
listen = "127.0.0.1:$gate_port"
data_dir = "$work/tollgate-data"
[providers.slow]
kind = "anthropic"
base_url = "http://127.0.0.1:$slow_port"
[models.bench-stream]
class = "sonnet"
provider = "slow"
upstream_model = "claude-sonnet-4-6"
input = "3"
output = "15"
[providers.fake-openai]
kind = "openai"
base_url = "http://127.0.0.1:$fake_port/v1"
[models.bench-embed]
class = "haiku"
provider = "fake-openai"
upstream_model = "text-embedding-3-small"
embeddings = true
input = "0.02"
[providers.fake-gemini]
kind = "gemini"
base_url = "http://127.0.0.1:$gemini_port"
api_key = "$gemini_key"
[models.bench-gemini]
class = "sonnet"
provider = "fake-gemini"
upstream_model = "gemini-2.5-flash"
input = "0.3"
output = "2.5"
[providers.fake-bedrock]
kind = "bedrock"
region = "us-east-1"
endpoint = "http://127.0.0.1:$bedrock_port"
access_key_id = "AKIDTOLLGATETEST0001"
secret_access_key = "fake/secret+access+key/for+tollgate+tests"
[models.bench-bedrock]
class = "sonnet"
provider = "fake-bedrock"
upstream_model = "anthropic.claude-sonnet-4-6"
input = "3"
output = "15"
[providers.fake-vertex]
kind = "vertex"
project = "tollgate-test"
region = "us-east5"
endpoint = "http://127.0.0.1:$vertex_port"
credentials_file = "$work/vertex-service-account.json"
[models.bench-vertex]
class = "sonnet"
provider = "fake-vertex"
upstream_model = "claude-sonnet-4-6"
input = "3"
output = "15"
TOML
  bench_model_and_tier "$fake_port"; } > "$work/tollgate.toml"
export RUST_LOG=warn
"$bin"/tollgate --config "$work/tollgate.toml" credits grant --amount 100000000 --kind promotional >/dev/null 2>&1
key="$("$bin"/tollgate --config "$work/tollgate.toml" keys create --name bench 2>/dev/null)"
"$bin"/tollgate --config "$work/tollgate.toml" serve >/dev/null 2>&1 &
gate_pid=$!
pids+=($gate_pid)

# The same deployment on PostgreSQL + Redis: one schema and key prefix, three replicas.
replica_pids=()
if [ "$replicas" != 0 ]; then
  sed -e "s|^listen = .*|listen = \"127.0.0.1:$(( pg_port + 1 ))\"|" "$work/tollgate.toml" > "$work/pg.toml"
  cat >> "$work/pg.toml" <<TOML
[database]
url = "$database_url"
schema = "$bench_schema"
[limits]
redis_url = "$redis_url"
redis_key_prefix = "$bench_schema:"
TOML
  pg() { "$bin"/tollgate --config "$work/pg.toml" "$@"; }
  pg credits grant --amount 100000000 --kind promotional >/dev/null 2>&1
  pg_key="$(pg keys create --name bench 2>/dev/null)"
  # Eight more organizations, each with its own credit and key: money of different
  # organizations never shares a lock.
  org_keys=()
  for org in 1 2 3 4 5 6 7 8; do
    pg orgs create "bench-$org" >/dev/null 2>&1
    pg credits grant --org "bench-$org" --amount 100000000 --kind promotional >/dev/null 2>&1
    org_keys+=("$(pg keys create --org "bench-$org" --name bench 2>/dev/null)")
  done
  for replica in 1 2 3; do
    # Not through `pg`: a backgrounded function is a subshell, and its pid not the server's.
    "$bin"/tollgate --config "$work/pg.toml" serve --listen "127.0.0.1:$(( pg_port + replica ))" >/dev/null 2>&1 &
    replica_pids+=($!); pids+=($!)
  done
fi

litellm_pid=""
if [ "${LITELLM:-1}" != 0 ] && [ -x bench/.venv/bin/litellm ]; then
  cat > "$work/litellm.yaml" <<YAML
model_list:
  - model_name: bench-model
    litellm_params:
      model: anthropic/claude-sonnet-4-6
      api_base: http://127.0.0.1:$fake_port
      api_key: fake-provider-key
litellm_settings:
  telemetry: false
YAML
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR bench/.venv/bin/litellm --config "$work/litellm.yaml" \
    --host 127.0.0.1 --port "$litellm_port" --num_workers 2 >"$work/litellm.log" 2>&1 &
  litellm_pid=$!
  pids+=($litellm_pid)
fi

wait_up() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; return 1; }
wait_up "http://127.0.0.1:$gate_port/health"
if [ "$replicas" != 0 ]; then
  for replica in 1 2 3; do wait_up "http://127.0.0.1:$(( pg_port + replica ))/health"; done
fi
wait_up "http://127.0.0.1:$nginx_port/"
if [ -n "$litellm_pid" ] && ! wait_up "http://127.0.0.1:$litellm_port/health/liveliness"; then
  echo "LiteLLM did not start; its rows are skipped:" >&2; tail -5 "$work/litellm.log" >&2; litellm_pid=""
fi

# The Messages request every Messages row sends (wrk) and SELF_TIME sends (self_time.py).
messages_body='{"model":"bench-model","max_tokens":64,"messages":[{"role":"user","content":"Hello, world"}]}'
post_script() { # key -> a wrk script posting the benchmark request with that key
  cat <<LUA
wrk.method = "POST"
wrk.body = '$messages_body'
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "$1"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %.1f %d %d %d %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), errors, summary.requests))
end
LUA
}
post_script "$key" > "$work/post.lua"
wrk_script() { # body, then headers as "name: value" -> a wrk script reporting as post.lua does
  echo 'wrk.method = "POST"'
  echo "wrk.body = '$1'"
  echo 'wrk.headers["content-type"] = "application/json"'
  shift
  local header
  for header in "$@"; do echo "wrk.headers[\"${header%%: *}\"] = \"${header#*: }\""; done
  sed -n '/^done = function/,$p' "$work/post.lua"
}
# Gemini, Bedrock and Vertex: the same prompt in each one's own request, direct (the model in
# the URL); the Messages request to a deployment on each through tollgate.
# The same Messages request as a stream (SSE), for the streaming throughput rows.
sed -e 's/{"model":"bench-model"/{"model":"bench-model","stream":true/' "$work/post.lua" > "$work/post-sse.lua"
for upstream in gemini bedrock vertex; do
  sed -e "s/\"model\":\"bench-model\"/\"model\":\"bench-$upstream\"/" "$work/post.lua" > "$work/post-$upstream.lua"
done
prompt='"messages":[{"role":"user","content":"Hello, world"}]'
wrk_script '{"contents":[{"role":"user","parts":[{"text":"Hello, world"}]}],"generationConfig":{"maxOutputTokens":64}}' \
  "x-goog-api-key: $gemini_key" > "$work/gemini.lua"
wrk_script "{\"anthropic_version\":\"bedrock-2023-05-31\",\"max_tokens\":64,$prompt}" > "$work/bedrock.lua"
wrk_script "{\"anthropic_version\":\"vertex-2023-10-16\",\"max_tokens\":64,$prompt}" \
  "authorization: Bearer ya29.bench-vertex-token" > "$work/vertex.lua"
# Responses: the prompt as OpenAI's Responses API takes it. Files: a text document uploaded
# once, then named by its id in each request.
wrk_script '{"model":"bench-model","max_output_tokens":64,"input":"Hello, world"}' \
  "authorization: Bearer $key" > "$work/responses.lua"
wrk_script '{"model":"bench-model","max_output_tokens":64,"input":"Hello, world","store":false}' \
  "authorization: Bearer $key" > "$work/responses-unstored.lua"
if [ "${SURFACES:-1}" != 0 ]; then
  printf 'A short text document for the benchmark.\n' > "$work/bench-file.txt"
  file_id="$(curl -sf -H "x-api-key: $key" -H "anthropic-beta: files-api-2025-04-14" \
    -F "file=@$work/bench-file.txt;type=text/plain" "http://127.0.0.1:$gate_port/v1/files" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
  wrk_script "{\"model\":\"bench-model\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"document\",\"source\":{\"type\":\"file\",\"file_id\":\"$file_id\"}},{\"type\":\"text\",\"text\":\"Hello, world\"}]}]}" \
    "anthropic-version: 2023-06-01" "anthropic-beta: files-api-2025-04-14" "x-api-key: $key" > "$work/post-file.lua"
fi
# Embeddings: OpenAI's request, with the key as OpenAI's clients send it.
wrk_script '{"model":"bench-embed","input":"The quick brown fox jumps over the lazy dog"}' \
  "authorization: Bearer $key" > "$work/embed.lua"
if [ "$replicas" != 0 ]; then
  post_script "$pg_key" > "$work/post-pg.lua"
  # Each request takes the next organization's key.
  post_script "${org_keys[0]}" > "$work/post-orgs.lua"
  cat >> "$work/post-orgs.lua" <<LUA
local keys = { "$(IFS='|'; echo "${org_keys[*]}" | sed 's/|/", "/g')" }
local next_key = 0
request = function()
  next_key = next_key % #keys + 1
  wrk.headers["x-api-key"] = keys[next_key]
  return wrk.format()
end
LUA
fi

# Peak resident memory (VmHWM) of a process and its children, in MiB.
peak_rss() {
  local total=0 pid
  for pid in $1 $(pgrep -P "$1" 2>/dev/null || true); do
    total=$(( total + $(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) ))
  done
  echo $(( total / 1024 ))
}

cpu_ticks() { # pids -> CPU time (user + system, in clock ticks) of them and their children
  local total=0 pid
  for pid in $1 $(for parent in $1; do pgrep -P "$parent" 2>/dev/null || true; done); do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
  done
  echo "$total"
}
clock_ticks="$(getconf CLK_TCK)"

results="$work/results.txt"
bench() { # name url pids [wrk script] [path]
  local connections run line rss pid before cpu
  for connections in $concurrencies; do
    for run in $(seq 1 "$runs"); do
      before="$(cpu_ticks "$3")"
      line="$(wrk -t "$(( connections < 2 ? 1 : 2 ))" -c "$connections" -d "${duration}s" --timeout 10s -s "${4:-$work/post.lua}" "$2${5:-/v1/messages}" | grep '^RESULT')"
      rss=0; for pid in $3; do rss=$(( rss + $(peak_rss "$pid") )); done
      # CPU microseconds a request, of the server's processes (nginx: master and workers).
      cpu=$(( ( $(cpu_ticks "$3") - before ) * 1000000 / clock_ticks ))
      echo "$1 $connections $run ${line#RESULT } $rss $cpu" >> "$results"
      echo "  $1 c=$connections run $run: ${line#RESULT }" >&2
    done
  done
}
fake_pid=${pids[0]}
bench direct "http://127.0.0.1:$fake_port" "$fake_pid"
bench nginx "http://127.0.0.1:$nginx_port" "$(cat "$work/nginx/nginx.pid")"
bench tollgate "http://127.0.0.1:$gate_port" "$gate_pid"
if [ "${SSE:-1}" != 0 ]; then
  bench direct-sse "http://127.0.0.1:$fake_port" "$fake_pid" "$work/post-sse.lua"
  bench nginx-sse "http://127.0.0.1:$nginx_port" "$(cat "$work/nginx/nginx.pid")" "$work/post-sse.lua"
  bench tollgate-sse "http://127.0.0.1:$gate_port" "$gate_pid" "$work/post-sse.lua"
fi
if [ "$replicas" != 0 ]; then
  bench pg-x1 "http://127.0.0.1:$(( pg_port + 1 ))" "${replica_pids[0]}" "$work/post-pg.lua"
  bench pg-x3 "http://127.0.0.1:$lb_port" "${replica_pids[*]}" "$work/post-pg.lua"
  bench pg-x1-orgs "http://127.0.0.1:$(( pg_port + 1 ))" "${replica_pids[0]}" "$work/post-orgs.lua"
  bench pg-x3-orgs "http://127.0.0.1:$lb_port" "${replica_pids[*]}" "$work/post-orgs.lua"
fi
[ -n "$litellm_pid" ] && bench litellm "http://127.0.0.1:$litellm_port" "$litellm_pid"
if [ "${EMBEDDINGS:-1}" != 0 ]; then
  bench direct-embed "http://127.0.0.1:$fake_port" "$fake_pid" "$work/embed.lua" /v1/embeddings
  bench nginx-embed "http://127.0.0.1:$nginx_port" "$(cat "$work/nginx/nginx.pid")" "$work/embed.lua" /v1/embeddings
  bench tollgate-embed "http://127.0.0.1:$gate_port" "$gate_pid" "$work/embed.lua" /v1/embeddings
fi
if [ "${GEMINI:-1}" != 0 ]; then
  bench direct-gemini "http://127.0.0.1:$gemini_port" "$fake_pid" "$work/gemini.lua" /v1beta/models/gemini-2.5-flash:generateContent
  bench tollgate-gemini "http://127.0.0.1:$gate_port" "$gate_pid" "$work/post-gemini.lua"
fi
if [ "${SURFACES:-1}" != 0 ]; then
  bench tollgate-responses "http://127.0.0.1:$gate_port" "$gate_pid" "$work/responses.lua" /v1/responses
  bench tollgate-responses-unstored "http://127.0.0.1:$gate_port" "$gate_pid" "$work/responses-unstored.lua" /v1/responses
  bench tollgate-file "http://127.0.0.1:$gate_port" "$gate_pid" "$work/post-file.lua"
fi
if [ "${CLOUDS:-1}" != 0 ]; then
  bench direct-bedrock "http://127.0.0.1:$bedrock_port" "$fake_pid" "$work/bedrock.lua" /model/anthropic.claude-sonnet-4-6/invoke
  bench tollgate-bedrock "http://127.0.0.1:$gate_port" "$gate_pid" "$work/post-bedrock.lua"
  bench direct-vertex "http://127.0.0.1:$vertex_port" "$fake_pid" "$work/vertex.lua" \
    /v1/projects/tollgate-test/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-6:rawPredict
  bench tollgate-vertex "http://127.0.0.1:$gate_port" "$gate_pid" "$work/post-vertex.lua"
fi

if [ -n "${SELF_TIME:-}" ]; then
  # Tollgate's own time a request (server-timing: to the response head, less the upstream
  # call), SELF_TIME sequential requests on one connection, after a warm-up.
  python3 bench/self_time.py "$gate_port" "$key" 200 "$messages_body" >/dev/null
  read -r own50 own90 own99 up50 count < <(python3 bench/self_time.py "$gate_port" "$key" "$SELF_TIME" "$messages_body" | sed 's/^SELF //')
  echo "tollgate's own time a request (server-timing, 1 connection, $count requests): p50 $own50 ms, p90 $own90 ms, p99 $own99 ms; upstream p50 $up50 ms"
fi

if [ -n "${PROFILE:-}" ]; then
  need_apt perf linux-perf
  profile_out="${PROFILE_OUT:-bench/profile.txt}"
  profile_conns="${PROFILE_CONNS:-32}"
  echo "profiling tollgate at $profile_conns connections for ${PROFILE}s…" >&2
  perf record -q -F 499 --call-graph dwarf,32768 -p "$gate_pid" -o "$work/perf.data" -- sleep "$PROFILE" 2>/dev/null &
  perf_pid=$!
  sleep 0.5
  wrk -t "$(( profile_conns < 2 ? 1 : 2 ))" -c "$profile_conns" -d "$(( PROFILE - 1 ))s" -s "$work/post${PROFILE_SSE:+-sse}.lua" "http://127.0.0.1:$gate_port/v1/messages" >/dev/null
  wait "$perf_pid" || true
  { echo "# perf: tollgate serving the Messages request at $profile_conns connections for ${PROFILE}s ($(date -u +%F), tollgate $("$bin"/tollgate --version | cut -d' ' -f2))"
    echo "## self time by symbol"
    perf report -i "$work/perf.data" --no-children --sort symbol --percent-limit 0.7 --stdio -g none 2>/dev/null | grep -v '^$'
    echo "## self time by thread"
    perf report -i "$work/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$'
    echo "## time with callees (children), by symbol"
    perf report -i "$work/perf.data" --children --sort symbol --percent-limit 4 --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | grep -v '(inlined)'
  } | sed -E 's/ {2,}/ /g; s/ - - *$//' > "$profile_out"
  [ -z "${PROFILE_KEEP:-}" ] || cp "$work/perf.data" "$PROFILE_KEEP"
  echo "profile written to $profile_out" >&2
fi

# Streaming: many slow SSE streams at once, direct and through tollgate; tollgate's
# resident memory is sampled while they run.
sample_rss() { # pid -> max VmRSS in MiB until killed
  local max=0 now
  while kill -0 "$1" 2>/dev/null; do
    now=$(awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0)
    [ "$now" -gt "$max" ] && max=$now && echo $(( max / 1024 )) > "$work/stream-rss"
    sleep 0.1
  done
}
if [ "$streams" -gt 0 ]; then
echo "streaming: $streams concurrent streams…" >&2
stream_direct="$("$bin"/stream-load --addr "127.0.0.1:$slow_port" --streams "$streams" --model bench-stream | grep '^STREAMS')"
rss_before=$(( $(awk '/VmRSS/ {print $2}' "/proc/$gate_pid/status") / 1024 ))
sample_rss "$gate_pid" & sampler=$!
stream_gate="$("$bin"/stream-load --addr "127.0.0.1:$gate_port" --streams "$streams" --key "$key" --model bench-stream | grep '^STREAMS')"
kill "$sampler" 2>/dev/null || true
fi

echo
python3 bench/summarize.py "$results"
echo
if [ "$streams" -gt 0 ]; then
  echo "Streaming, $streams concurrent SSE streams ($stream_delay_ms ms between events):"
  echo "- direct:   ${stream_direct#STREAMS }"
  echo "- tollgate: ${stream_gate#STREAMS }"
  echo "- tollgate resident memory: ${rss_before} MiB before, peak $(cat "$work/stream-rss" 2>/dev/null || echo '?') MiB during the streams"
fi
echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; $(uname -sr); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); nginx $(nginx -v 2>&1 | cut -d/ -f2); $( [ -n "$litellm_pid" ] && echo "litellm $(bench/.venv/bin/pip show litellm 2>/dev/null | awk '/Version/ {print $2}')" ); tollgate $("$bin"/tollgate --version | cut -d' ' -f2)"
echo "ledger after the runs: $("$bin"/tollgate --config "$work/tollgate.toml" credits balance)"
