#!/usr/bin/env python3
"""Count the SQL statements the service ran during each nepxy-bench run.

Usage:
    BENCH_SERVICE_LOG='warn,sqlx::query=debug' scripts/bench.sh ARGS... >driver.log 2>&1
    bench/statements.py target/bench/server.log driver.log

The service logs one `sqlx::query` line per statement (with RUST_LOG as
above), and nepxy-bench prints the Unix start and end time of each run to
stderr and its figures to stdout. For each run this prints the statements per request, grouped by
their leading words, including statements of background tasks (dispatcher,
projector) that ran during the run. BEGIN and COMMIT count as statements
because each is one round trip.
"""

import collections
import datetime
import re
import sys

RUN_LINE = re.compile(
    r"^(?P<name>\w+ run, \w+ wallets, \d+ clients): unix time (?P<start>[\d.]+) to (?P<end>[\d.]+)"
)
REQUESTS_LINE = re.compile(r"^(?P<clients>\d+) clients, (?P<label>[^:]+): (?P<count>\d+) requests")
STATEMENT_LINE = re.compile(r'^(?P<time>\S+) DEBUG summary="(?P<summary>[^"]*)"')


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_runs(path):
    """Return (name, start, end, requests) per run, in the order they ran."""
    runs = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            match = RUN_LINE.match(line)
            if match:
                runs.append([match["name"], float(match["start"]), float(match["end"]), None])
                continue
            match = REQUESTS_LINE.match(line)
            if match and runs and runs[-1][3] is None and "pgbench" not in match["label"]:
                runs[-1][3] = int(match["count"])
    return runs


def read_statements(path):
    statements = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            match = STATEMENT_LINE.match(line)
            if match:
                words = match["summary"].replace("…", "").split()
                statements.append((parse_time(match["time"]), " ".join(words[:4])))
    return statements


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: statements.py SERVER_LOG DRIVER_OUTPUT (stdout and stderr of scripts/bench.sh)")
    statements = read_statements(sys.argv[1])
    for name, start, end, requests in read_runs(sys.argv[2]):
        if not requests:
            print(f"{name}: no request count found, skipped")
            continue
        counts = collections.Counter(
            summary for time, summary in statements if start <= time <= end
        )
        total = sum(counts.values())
        print(f"{name}: {requests} requests, {total / requests:.1f} statements per request")
        for summary, count in counts.most_common():
            print(f"    {count / requests:6.2f}  {summary}")


if __name__ == "__main__":
    main()
