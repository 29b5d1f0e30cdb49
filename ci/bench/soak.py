#!/usr/bin/env python3
"""Soak: meshgate's memory over a long run of mixed traffic (default 5 minutes).

One meshgate worker pinned to CPU 1 proxies, in repeating cycles of 20-second segments:
  keep-alive   wrk -t1 -c32, HTTP/1.1 keep-alive, to an nginx static backend;
  close        wrk -t1 -c32 with `Connection: close`: a new downstream connection per request;
  h2c          h2load -c32 -m10, h2c with prior knowledge;
  grpc         h2load -c32 -m10 POSTs of a framed EchoRequest to meshbench's gRPC echo (h2 upstream).
The load and the backends run on CPU 0. After each segment two figures are read: the gateway's
resident memory (VmRSS, from /proc) and the bytes it has allocated and not freed
(`envoy_server_memory_allocated` on its admin's /stats/prometheus; the soak builds meshgate with
the `count-alloc` feature, which counts them). The run passes when the last cycle's largest live
heap is within 10% (and at least 1 MiB) of the first cycle's: memory that grows with the requests
served, not with the peak concurrency, would show as a rise from cycle to cycle. RSS is judged by
the same rule and printed; it also holds what the allocator keeps for reuse, and so moves with its
high-water marks, which is why it does not decide the run.

  ci/bench/install-peers.sh && python3 ci/bench/soak.py [--minutes 5] [--segment 20]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadgen import MESHBENCH, free_port, wait_port  # noqa: E402
from gateway import (GATEWAY, GRPC_PATH, GRPC_SERVICE, MESHGATE, grpc_request_file, h2load, nginx, start, write,  # noqa: E402
                     wrk, ROOT)

ROUTES = GRPC_SERVICE + """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: soak, namespace: default}}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - match: [{{uri: {{prefix: /proto.}}}}]
    route: [{{destination: {{host: grpc-backend.example.com}}}}]
  - route: [{{destination: {{host: backend.example.com}}}}]
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def heap_kib(admin_port):
    """meshgate's `envoy_server_memory_allocated` (a `count-alloc` build), in KiB."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats/prometheus", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("envoy_server_memory_allocated "):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no envoy_server_memory_allocated: is meshgate built with --features count-alloc?")


def judge(what, peaks):
    """Prints the rule's verdict on one figure's largest value per cycle; True when it grew."""
    growth, allowed = peaks[-1] - peaks[0], max(1024, peaks[0] // 10)
    grew = growth > allowed
    print(f"  {what}, largest per cycle: first {peaks[0]} KiB, last {peaks[-1]} KiB, most {max(peaks)} KiB: "
          f"growth {growth:+d} KiB (allowed {allowed} KiB): {'GREW' if grew else 'no growth'}")
    return grew


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--segment", type=int, default=20, help="seconds of each kind of traffic")
    args = p.parse_args()
    for tool in ["nginx", "wrk", "h2load", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run ci/bench/install-peers.sh")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "meshbench"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "meshgate", "--features", "count-alloc"],
                   cwd=ROOT, check=True)

    d = tempfile.mkdtemp(prefix="meshbench-soak-")
    # The counting build, copied: a later plain build (gateway.py's) replaces target/release/meshgate.
    bin_dir = tempfile.mkdtemp(prefix="meshbench-soak-bin-")
    counted = os.path.join(bin_dir, "meshgate")
    shutil.copy(MESHGATE, counted)
    backend_port, grpc_port, port, admin_port = free_port(), free_port(), free_port(), free_port()
    bdir, bconf = nginx(f'server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 "hello\\n"; }} }}', "soak")
    procs = [start(["nginx", "-c", bconf, "-p", bdir], "0"),
             start([MESHBENCH, "echo", "--service", "grpc", "--grpc", f"127.0.0.1:{grpc_port}"], "0")]
    try:
        write(d, "config.yaml", GATEWAY.format(backend_port=backend_port) + ROUTES.format(grpc_port=grpc_port))
        gate = start([counted, "-c", d, "--labels", "app=bench", "--port-map", f"80=127.0.0.1:{port}",
                      "--admin", f"127.0.0.1:{admin_port}", "--access-log", "off", "--workers", "1"], "1")
        procs.append(gate)
        for p_ in (backend_port, grpc_port, port, admin_port):
            wait_port(p_)
        heap_kib(admin_port)  # the counting build answers, or the run stops here
        body = grpc_request_file(d)
        grpc_headers = ("content-type: application/grpc", "te: trailers")
        segments = [
            ("keep-alive", lambda s: wrk(port, s)),
            ("close", lambda s: wrk(port, s, headers=("Connection: close",))),
            ("h2c", lambda s: h2load(port, s)),
            ("grpc", lambda s: h2load(port, s, GRPC_PATH, grpc_headers, body)),
        ]
        cycle_s = args.segment * len(segments)
        cycles = max(2, round(args.minutes * 60 / cycle_s))
        print(f"meshgate soak: {cycles} cycles of {', '.join(n for n, _ in segments)} "
              f"({args.segment} s each, {cycles * cycle_s / 60:.1f} minutes); at start RSS {rss_kib(gate.pid)} KiB, "
              f"live heap {heap_kib(admin_port)} KiB")
        rss_peaks, heap_peaks, served, started = [], [], 0, time.monotonic()
        for c in range(cycles):
            row = []
            for name, run in segments:
                rps = run(args.segment)
                served += rps * args.segment
                row.append((name, rps, rss_kib(gate.pid), heap_kib(admin_port)))
            rss_peaks.append(max(r[2] for r in row))
            heap_peaks.append(max(r[3] for r in row))
            print(f"  cycle {c + 1:>2}: " + "  ".join(f"{n} {rps:>6.0f} rps, RSS {r}, heap {h} KiB"
                                                   for n, rps, r, h in row))
        print(f"  {served / 1e6:.1f}M requests in {(time.monotonic() - started) / 60:.1f} minutes")
        heap_grew = judge("live heap", heap_peaks)
        if judge("RSS", rss_peaks) and not heap_grew:
            print("  (RSS rose while the live heap did not: memory the allocator keeps for reuse)")
        if heap_grew:
            sys.exit("meshgate's live heap grew over the run")
        print("  no growth of the live heap")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(bin_dir, ignore_errors=True)
        shutil.rmtree(bdir, ignore_errors=True)


if __name__ == "__main__":
    main()
