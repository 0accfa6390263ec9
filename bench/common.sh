# Sourced by the benchmark scripts: what their tollgate configs share.

# The bench model on the fake upstream at port $1, and one tier whose limits no benchmark
# reaches, so that what is measured is overhead, not refusals.
bench_model_and_tier() {
  cat <<TOML
[providers.fake]
kind = "anthropic"
base_url = "http://127.0.0.1:$1"
[models.bench-model]
class = "sonnet"
provider = "fake"
upstream_model = "claude-sonnet-4-6"
input = "3"
output = "15"
[[tiers]]
name = "Bench"
cumulative_purchases_usd = "0"
count_tokens_requests_per_minute = 100000000
rate_limits.opus = { requests_per_minute = 100000000, input_tokens_per_minute = 100000000000, output_tokens_per_minute = 100000000000 }
rate_limits.sonnet = { requests_per_minute = 100000000, input_tokens_per_minute = 100000000000, output_tokens_per_minute = 100000000000 }
rate_limits.haiku = { requests_per_minute = 100000000, input_tokens_per_minute = 100000000000, output_tokens_per_minute = 100000000000 }
TOML
}
