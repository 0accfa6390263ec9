#!/usr/bin/env python3
"""Tollgate's own share of a request's time, as its `server-timing` header reports it
(`tollgate;dur=…`: from arrival to the response head, less the upstream call), over N
sequential requests on one keep-alive connection: percentiles in milliseconds.

Usage: bench/self_time.py PORT KEY N BODY (the Messages request, as bench/run.sh sends it)
"""
import http.client
import sys

port, key, count, body = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
headers = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": key}
connection = http.client.HTTPConnection("127.0.0.1", port)
own, upstream = [], []
for _ in range(count):
    connection.request("POST", "/v1/messages", body, headers)
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"status {response.status}")
    timing = dict(
        part.strip().split(";dur=") for part in response.getheader("server-timing", "").split(",")
    )
    own.append(float(timing["tollgate"]))
    upstream.append(float(timing.get("upstream", "0")))


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


print(
    f"SELF {percentile(own, 0.5):.3f} {percentile(own, 0.9):.3f} {percentile(own, 0.99):.3f} "
    f"{percentile(upstream, 0.5):.3f} {count}"
)
