#!/usr/bin/env python3
"""Summarize criterion's console output (a saved `cargo bench ... 2>&1` log): one line per
benchmark with the median time and throughput, then the stderr lines the benches print
(interleaved comparisons, group-commit and recovery summaries).

usage: benches/scripts/summarize.py LOG [LOG...]
"""
import re
import sys

for path in sys.argv[1:]:
    text = open(path, encoding="utf-8", errors="replace").read()
    print(f"== {path}")
    name = None
    rows = []
    for line in text.splitlines():
        m = re.match(r"^([a-z_0-9]+/[^\s:]+)(?:\s+time:.*)?$", line.strip()) if not line.startswith(" ") else None
        if m and not line.startswith("Benchmarking"):
            name = m.group(1)
        t = re.search(r"time:\s+\[(\S+ \S+) (\S+ \S+) (\S+ \S+)\]", line)
        if t and name and "%" not in line:
            rows.append([name, t.group(2), ""])
        r = re.search(r"thrpt:\s+\[(\S+\s+\S+) (\S+\s+\S+) (\S+\s+\S+)\]", line)
        if r and rows and rows[-1][0] == name and "%" not in line:
            rows[-1][2] = r.group(2)
    for n, t, r in rows:
        print(f"  {n:<40} {t:>12} {r:>16}")
    seen = set()
    for line in text.splitlines():
        if line in seen:
            continue
        seen.add(line)
        if line.startswith(("interleaved", "load ", "segkv ", "wrote ", "engine.recovery", "group_commit/")) and (
            "ops/s" in line or not line.startswith("group_commit/")
        ):
            print("  " + line)
