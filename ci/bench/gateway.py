#!/usr/bin/env python3
"""Gateway benchmark: one route proxied by meshgate and by nginx, in the same run.

Same backend (an nginx serving a small static response, pinned to CPU 0 with the load
generator), same client (wrk -t1 -c32 for throughput; meshbench open loop at a fixed rate for
latency), same connections; each proxy gets one worker (meshgate --workers 1, nginx
worker_processes 1) pinned to CPU 1, access logs off. Rounds alternate the proxies; medians,
spreads and the ratios meshgate/nginx are printed.

  ci/bench/install-peers.sh && python3 ci/bench/gateway.py [--rounds 3] [--seconds 5]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadgen import ROOT, MESHBENCH, free_port, wait_port  # noqa: E402

MESHGATE = os.path.join(ROOT, "target", "release", "meshgate")


def nginx(conf_body, tag):
    d = tempfile.mkdtemp(prefix=f"meshbench-{tag}-")
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 10000000;
  client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  {conf_body}
}}
""")
    return d, conf


def start(cmd, cpu):
    return subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wrk(port, seconds):
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def p99_at(port, rate, seconds):
    out = subprocess.run(["taskset", "-c", "0", MESHBENCH, "load", f"http://127.0.0.1:{port}/", "-R", str(rate),
                          "-d", f"{seconds}s", "-c", "32", "-t", "1", "-q", "--output", "json"],
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)["load"][0]
    return r["latency_us"]["p99"], r["latency_us"]["p50"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    args = p.parse_args()
    for tool in ["nginx", "wrk", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run ci/bench/install-peers.sh")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "meshgate", "-p", "meshbench"], cwd=ROOT, check=True)

    backend_port, nginx_port, gate_port = free_port(), free_port(), free_port()
    bdir, bconf = nginx(f'server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 "hello\\n"; }} }}', "backend")
    backend = start(["nginx", "-c", bconf, "-p", bdir], "0")
    wait_port(backend_port)
    pdir, pconf = nginx(f"""upstream app {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nginx_port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""", "proxy")
    gdir = tempfile.mkdtemp(prefix="meshbench-gate-")
    with open(os.path.join(gdir, "config.yaml"), "w") as f:
        f.write(f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend.example.com]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {backend_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: default}}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{{route: [{{destination: {{host: backend.example.com}}}}]}}]
""")
    procs = {}
    try:
        direct = wrk(backend_port, args.seconds)
        procs["nginx"] = start(["nginx", "-c", pconf, "-p", pdir], "1")
        procs["meshgate"] = start([MESHGATE, "-c", os.path.join(gdir, "config.yaml"), "--labels", "app=bench",
                                   "--port-map", f"80=127.0.0.1:{gate_port}", "--admin", "127.0.0.1:0",
                                   "--access-log", "off", "--workers", "1"], "1")
        ports = {"nginx": nginx_port, "meshgate": gate_port}
        for name, port in ports.items():
            wait_port(port)
        rps = {k: [] for k in ports}
        for rnd in range(args.rounds):
            order = list(ports) if rnd % 2 == 0 else list(reversed(ports))
            for name in order:
                rps[name].append(wrk(ports[name], args.seconds))
        rate = int(min(statistics.median(v) for v in rps.values()) * 0.5)
        lat = {k: [] for k in ports}
        for rnd in range(args.rounds):
            order = list(ports) if rnd % 2 == 0 else list(reversed(ports))
            for name in order:
                lat[name].append(p99_at(ports[name], rate, args.seconds))
        print(f"== gateway: one route, wrk -t1 -c32 {args.seconds}s, one proxy worker on CPU 1; "
              f"backend direct {direct:.0f} rps")
        for name in ports:
            r = rps[name]
            p99 = [x[0] for x in lat[name]]
            print(f"  {name:<9} {statistics.median(r):>9.0f} rps ({min(r):.0f}..{max(r):.0f})   "
                  f"p99 at {rate} rps: {statistics.median(p99) / 1000:.2f} ms   peak RSS {rss_kib(procs[name].pid)} KiB")
        ratio = statistics.median(rps["meshgate"]) / statistics.median(rps["nginx"])
        p99_ratio = statistics.median(x[0] for x in lat["meshgate"]) / statistics.median(x[0] for x in lat["nginx"])
        print(f"  meshgate / nginx: throughput {ratio:.2f}x, p99 at a fixed rate {p99_ratio:.2f}x (lower is better)")
        for name in ports:
            bound = "the backend" if statistics.median(rps[name]) >= direct * 0.8 else "the proxy"
            print(f"  bottleneck for {name}: {bound} (direct backend {direct:.0f} rps)")
    finally:
        for proc in list(procs.values()) + [backend]:
            proc.terminate()
            proc.wait()
        for d in (bdir, pdir, gdir):
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
