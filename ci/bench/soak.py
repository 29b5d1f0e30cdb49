#!/usr/bin/env python3
"""Soak: meshgate's memory over a long run of mixed traffic (default 5 minutes).

One meshgate worker pinned to CPU 1 proxies, in repeating cycles of 20-second segments:
  keep-alive   wrk -t1 -c32, HTTP/1.1 keep-alive, to an nginx static backend;
  close        wrk -t1 -c32 with `Connection: close`: a new downstream connection per request;
  h2c          h2load -c32 -m10, h2c with prior knowledge;
  grpc         h2load -c32 -m10 POSTs of a framed EchoRequest to meshbench's gRPC echo (h2 upstream).
The load and the backends run on CPU 0. After each segment the gateway's resident memory (VmRSS)
is read from /proc. The run passes when the last cycle's largest RSS is within 10% (and at least
1 MiB) of the first cycle's: memory that grows with the requests served, not with the peak
concurrency, would show as a rise from cycle to cycle.

  ci/bench/install-peers.sh && python3 ci/bench/soak.py [--minutes 5] [--segment 20]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--segment", type=int, default=20, help="seconds of each kind of traffic")
    args = p.parse_args()
    for tool in ["nginx", "wrk", "h2load", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run ci/bench/install-peers.sh")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "meshgate", "-p", "meshbench"], cwd=ROOT, check=True)

    d = tempfile.mkdtemp(prefix="meshbench-soak-")
    backend_port, grpc_port, port = free_port(), free_port(), free_port()
    bdir, bconf = nginx(f'server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 "hello\\n"; }} }}', "soak")
    procs = [start(["nginx", "-c", bconf, "-p", bdir], "0"),
             start([MESHBENCH, "echo", "--service", "grpc", "--grpc", f"127.0.0.1:{grpc_port}"], "0")]
    try:
        write(d, "config.yaml", GATEWAY.format(backend_port=backend_port) + ROUTES.format(grpc_port=grpc_port))
        gate = start([MESHGATE, "-c", d, "--labels", "app=bench", "--port-map", f"80=127.0.0.1:{port}",
                      "--admin", "127.0.0.1:0", "--access-log", "off", "--workers", "1"], "1")
        procs.append(gate)
        for p_ in (backend_port, grpc_port, port):
            wait_port(p_)
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
              f"({args.segment} s each, {cycles * cycle_s / 60:.1f} minutes); RSS at start "
              f"{rss_kib(gate.pid)} KiB")
        peaks, served, started = [], 0, time.monotonic()
        for c in range(cycles):
            row = []
            for name, run in segments:
                rps = run(args.segment)
                served += rps * args.segment
                row.append((name, rps, rss_kib(gate.pid)))
            peaks.append(max(r for _, _, r in row))
            print(f"  cycle {c + 1:>2}: " + "  ".join(f"{n} {rps:>7.0f} rps, RSS {r} KiB" for n, rps, r in row))
        growth = peaks[-1] - peaks[0]
        allowed = max(1024, peaks[0] // 10)
        print(f"  {served / 1e6:.1f}M requests in {(time.monotonic() - started) / 60:.1f} minutes; "
              f"largest RSS per cycle, first {peaks[0]} KiB, last {peaks[-1]} KiB: growth {growth:+d} KiB "
              f"(allowed {allowed} KiB)")
        if growth > allowed:
            sys.exit("meshgate's memory grew over the run")
        print("  no growth")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(bdir, ignore_errors=True)


if __name__ == "__main__":
    main()
