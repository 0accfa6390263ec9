"""Seeds a tollgate database with settled usage for the report benchmark.

Writes N reservations (settled) and their usage records over the 30 days before the start
of today (UTC), spread over the organization's workspaces and API keys and three models, in
one transaction. The usage rollup is kept by the database's own trigger, exactly as
settlements keep it. Usage: seed_usage.py DATABASE [N]
"""

import random
import sqlite3
import sys
import time

DAY_MS = 86_400_000
MODELS = [
    ("claude-sonnet-4-6", 3_000, 15_000),
    ("claude-haiku-4-5", 1_000, 5_000),
    ("claude-opus-4-6", 5_000, 25_000),
]


def main():
    path = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    org_id, = db.execute("SELECT id FROM organizations ORDER BY created_at LIMIT 1").fetchone()
    keys = db.execute(
        "SELECT id, workspace_id FROM api_keys WHERE org_id = ? AND kind = 'api'", (org_id,)
    ).fetchall()
    now_ms = int(time.time() * 1000)
    end = now_ms - now_ms % DAY_MS
    start = end - 30 * DAY_MS
    rng = random.Random(42)
    reservations = []
    records = []
    for n in range(count):
        key_id, workspace_id = keys[n % len(keys)]
        model, input_price, output_price = MODELS[n % len(MODELS)]
        ended_at = start + rng.randrange(30 * DAY_MS)
        input_tokens = rng.randrange(10, 4000)
        output_tokens = rng.randrange(1, 1000)
        cache_read = rng.randrange(0, 2000)
        cost = input_tokens * input_price + output_tokens * output_price + cache_read * input_price // 10
        reservation_id = f"rsv_bench{n:08d}"
        reservations.append(
            (reservation_id, org_id, workspace_id, key_id, f"req_bench{n:08d}", model, cost * 2,
             ended_at - 900, ended_at + 900_000, ended_at, cost)
        )
        records.append(
            (f"req_bench{n:08d}", org_id, workspace_id, key_id, model, input_tokens, output_tokens,
             cache_read, cost, ended_at - 900, ended_at, reservation_id)
        )
    began = time.time()
    with db:
        db.executemany(
            "INSERT INTO reservations (id, org_id, workspace_id, api_key_id, request_id, model, amount,"
            " state, created_at, deadline, ended_at, charged) VALUES (?, ?, ?, ?, ?, ?, ?, 'settled', ?, ?, ?, ?)",
            reservations,
        )
        db.executemany(
            "INSERT INTO usage_records (request_id, org_id, workspace_id, api_key_id, model, input_tokens,"
            " output_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,"
            " cache_read_input_tokens, cost_nanos, status, latency_ms, started_at, ended_at, reservation_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, 'succeeded', 900, ?, ?, ?)",
            records,
        )
    rollup, = db.execute("SELECT COUNT(*) FROM usage_hourly").fetchone()
    print(f"seeded {count} usage records in {time.time() - began:.1f} s; {rollup} rollup rows", file=sys.stderr)


if __name__ == "__main__":
    main()
