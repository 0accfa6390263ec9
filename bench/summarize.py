"""Summarises bench/run.sh results: medians over runs, added latency against direct."""
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    name, connections, _run, rps, p50, p99, p999, errors, requests, rss, cpu = line.split()
    # cpu: CPU microseconds the server's processes used during the run, in all.
    rows[(name, int(connections))].append(
        (float(rps), int(p50), int(p99), int(p999), int(errors), int(requests), int(rss),
         int(cpu) / max(int(requests), 1)))

def median(values):
    return statistics.median(values)

def ms(microseconds):
    return f"{microseconds / 1000:.2f} ms"

order = ["direct", "nginx", "tollgate", "direct-sse", "nginx-sse", "tollgate-sse", "tollgate-responses", "tollgate-responses-unstored", "tollgate-file", "pg-x1", "pg-x3", "pg-x1-orgs", "pg-x3-orgs", "litellm",
         "direct-embed", "nginx-embed", "tollgate-embed", "direct-gemini", "tollgate-gemini",
         "direct-bedrock", "tollgate-bedrock", "direct-vertex", "tollgate-vertex"]
print("| path | conns | req/s | p50 | p99 | p99.9 | added p50 | added p99 | errors | peak RSS | CPU a request |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for connections in sorted({key[1] for key in rows}):
    def base(name):
        # Each path's rows are measured against the same request sent direct.
        suffix = next((suffix for suffix in ("-sse", "-embed", "-gemini", "-bedrock", "-vertex") if name.endswith(suffix)), "")
        direct = rows.get(("direct" + suffix, connections))
        return (median([run[1] for run in direct]), median([run[2] for run in direct])) if direct else (0, 0)
    for name in order:
        runs = rows.get((name, connections))
        if not runs:
            continue
        base50, base99 = base(name)
        rps = median([run[0] for run in runs])
        p50 = median([run[1] for run in runs])
        p99 = median([run[2] for run in runs])
        p999 = median([run[3] for run in runs])
        errors = sum(run[4] for run in runs)
        rss = max(run[6] for run in runs)
        cpu = median([run[7] for run in runs])
        added50 = "—" if name.startswith("direct") else ms(p50 - base50)
        added99 = "—" if name.startswith("direct") else ms(p99 - base99)
        print(f"| {name} | {connections} | {rps:,.0f} | {ms(p50)} | {ms(p99)} | {ms(p999)} | {added50} | {added99} | {errors} | {rss} MiB | {cpu:.0f} µs |")

print()
for connections in sorted({key[1] for key in rows}):
    def rps(name):
        runs = rows.get((name, connections))
        return median([run[0] for run in runs]) if runs else None
    def cpu(name):
        runs = rows.get((name, connections))
        return median([run[7] for run in runs]) if runs else None
    gate, nginx, litellm = rps("tollgate"), rps("nginx"), rps("litellm")
    parts = []
    if gate and nginx:
        parts.append(f"tollgate/nginx throughput {gate / nginx:.0%}")
        if cpu("nginx"):
            parts.append(f"tollgate/nginx CPU a request {cpu('tollgate') / cpu('nginx'):.1f}x")
    stream_gate, stream_nginx = rps("tollgate-sse"), rps("nginx-sse")
    if stream_gate and stream_nginx:
        parts.append(f"streaming tollgate/nginx throughput {stream_gate / stream_nginx:.0%}")
    if gate and litellm:
        parts.append(f"tollgate/litellm {gate / litellm:.1f}x")
    if parts:
        print(f"- concurrency {connections}: " + ", ".join(parts))
