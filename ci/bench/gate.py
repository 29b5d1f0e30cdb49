#!/usr/bin/env python3
"""The regression gate over real runs on this machine: its false-alarm rate when nothing changed
(A/A) and how often it catches meshgate made 10% and 30% slower (A/B, with meshgate's test-only
--test-spin-us burning that share of its per-request time).

    cargo build --release --workspace && python3 ci/bench/gate.py [--runs 20] [--repeat 5]

Two ways of gating, each measured:
- in-run (`run --target main=reference:BIN,reference:BIN2 --against main`): the baseline build
  runs beside the candidate, repetitions interleaved; `--runs` runs per kind.
- file (`run --save-baseline` once, then `run --baseline`): `--runs` A/A runs compared with one
  saved baseline, where drift between runs on a shared machine counts against the gate.
A run that exits 1 was flagged. Each run is the HTTP/1.1 1000 rps scenario of gateway-load
through meshgate and straight to the workload, `--quick`, `--repeat` times. The unit tests
(harness/src/gate/tests.rs) assert the rates on simulated samples.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_suite(path):
    text = open(os.path.join(ROOT, "suites/load/gateway-load.yaml")).read()
    head, scenarios = text.split("scenarios:\n", 1)
    first = scenarios.split("\n- name: ")[0].rstrip()
    with open(path, "w") as f:
        f.write(f"{head}scenarios:\n{first}\n")


def run(meshbench, suite, repeat, out, targets, extra=()):
    cmd = [meshbench, "run", "--quick", "--repeat", str(repeat), "--target", targets,
           "--suite", "none", "--load", suite, "--out", out, "-o", "json"] + list(extra)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode not in (0, 1):
        sys.exit(f"meshbench run exited {p.returncode}:\n{p.stderr[-2000:]}")
    return p.returncode, json.loads(p.stdout)


def reference_p50_us(report):
    vals = [r["latency_us"]["p50"] for r in report["load"] if r.get("target") == "reference"]
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def wrapper(work, meshgate, spin):
    """A meshgate that burns `spin` microseconds per request (exec keeps the pid)."""
    path = os.path.join(work, f"meshgate-spin-{spin}")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec {meshgate} --test-spin-us={spin} "$@"\n')
    os.chmod(path, 0o755)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="comparisons per kind")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions per run")
    ap.add_argument("--meshbench", default=os.path.join(ROOT, "target/release/meshbench"))
    ap.add_argument("--skip-file", action="store_true", help="only the in-run comparisons")
    args = ap.parse_args()
    meshgate = os.path.join(os.path.dirname(args.meshbench), "meshgate")
    work = tempfile.mkdtemp(prefix="meshbench-gate-bench-")
    suite = os.path.join(work, "h1.yaml")
    load_suite(suite)
    baseline = os.path.join(work, "baseline.json")
    code, base = run(args.meshbench, suite, args.repeat, os.path.join(work, "base"), "reference",
                     ["--save-baseline", baseline])
    p50 = reference_p50_us(base)
    print(f"meshgate p50 {p50:.0f}us over {args.repeat} repetitions", flush=True)
    rows = []
    kinds = [("A/A (unchanged)", 0.0, args.runs), ("A/B +10%", 0.10, args.runs), ("A/B +30%", 0.30, max(5, args.runs // 4))]
    for name, share, n in kinds:
        spin = int(round(p50 * share))
        candidate = wrapper(work, meshgate, spin) if spin else meshgate
        targets = f"main=reference:{meshgate},reference:{candidate}"
        flagged = sum(run(args.meshbench, suite, args.repeat, os.path.join(work, f"inrun-{spin}-{i}"), targets,
                          ["--against", "main"])[0] == 1 for i in range(n))
        rows.append(("in-run", name, spin, flagged, n))
        print(f"in-run {name:<16} spin {spin:>4}us: flagged {flagged}/{n}", flush=True)
    if not args.skip_file:
        n = args.runs
        flagged = sum(run(args.meshbench, suite, args.repeat, os.path.join(work, f"file-{i}"), "reference",
                          ["--baseline", baseline])[0] == 1 for i in range(n))
        rows.append(("file baseline", "A/A (unchanged)", 0, flagged, n))
        print(f"file   A/A (unchanged)  flagged {flagged}/{n}", flush=True)
    print()
    print("| baseline | comparison | meshgate made slower by | flagged | rate |")
    print("|---|---|---|---|---|")
    for way, name, spin, flagged, n in rows:
        print(f"| {way} | {name} | {spin} us per request | {flagged}/{n} | {flagged / n:.0%} |")


if __name__ == "__main__":
    main()
