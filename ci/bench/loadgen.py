#!/usr/bin/env python3
"""Load generator benchmarks, each a ratio measured in one run on this machine.

  throughput  closed loop against one nginx (static small response): meshbench vs wrk and oha
              (HTTP/1.1) and vs h2load (h2c); rps and requests per CPU-second of the generator.
  accuracy    open loop at 10/50/80% of the measured maximum against a backend with a known
              delay: achieved rate vs asked, and p50 vs the delay.
  omission    a backend that stalls 1 s once in a 10 s run at 1000 rps: the corrected p99 must
              show the stall, the uncorrected one must not (expected values computed by hand).
  memory      RSS after a 30 s and a 300 s run at a fixed rate (--memory; takes 6 minutes).

Same CPU budget for every generator: the backend is pinned to CPU 0, each generator to CPU 1,
one thread each. Rounds alternate the generators; medians and spreads are printed.

  ci/bench/install-peers.sh && python3 ci/bench/loadgen.py [--rounds 3] [--seconds 5] [--memory]
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESHBENCH = os.path.join(ROOT, "target", "release", "meshbench")
DELAY_SERVER = os.path.join(ROOT, "target", "release", "examples", "delay_server")
BACKEND_CPU, GEN_CPU = "0", "1"


def build():
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "meshbench", "--bin", "meshbench",
                    "--example", "delay_server"], cwd=ROOT, check=True)


def timed(cmd):
    """Runs cmd pinned to the generator CPU; returns (stdout, cpu seconds, max RSS in KiB)."""
    with tempfile.NamedTemporaryFile("r") as t:
        full = ["/usr/bin/time", "-f", "%U %S %M", "-o", t.name, "taskset", "-c", GEN_CPU] + cmd
        out = subprocess.run(full, capture_output=True, text=True, check=True).stdout
        user, sys_, rss = t.read().split()[-3:]
    return out, float(user) + float(sys_), int(rss)


class Nginx:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="meshbench-nginx-")
        self.h1, self.h2c = free_port(), free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 10000000;
  client_body_temp_path {self.dir}/b; proxy_temp_path {self.dir}/p; fastcgi_temp_path {self.dir}/f;
  uwsgi_temp_path {self.dir}/u; scgi_temp_path {self.dir}/s;
  server {{ listen 127.0.0.1:{self.h1}; listen 127.0.0.1:{self.h2c} http2;
           location / {{ return 200 "hello\\n"; }} }}
}}
""")
        self.proc = subprocess.Popen(["taskset", "-c", BACKEND_CPU, "nginx", "-c", conf, "-p", self.dir])
        wait_port(self.h1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class DelayServer:
    def __init__(self, delay_ms, stall_at=None, stall_for=None):
        args = [DELAY_SERVER, "127.0.0.1:0", str(delay_ms)]
        if stall_at is not None:
            args += [str(stall_at), str(stall_for)]
        self.proc = subprocess.Popen(["taskset", "-c", BACKEND_CPU] + args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.addr = line.strip().split()[-1]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def meshbench(url, seconds, conns, extra=()):
    out, cpu, rss = timed([MESHBENCH, "load", url, "-d", f"{seconds}s", "-c", str(conns), "-t", "1", "-q",
                           "--output", "json", *extra])
    r = json.loads(out)["load"][0]
    return {"rps": r["rps"], "requests": r["requests"], "cpu": cpu, "rss": rss, "result": r}


def wrk(url, seconds, conns):
    out, cpu, rss = timed(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", url])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "requests": n, "cpu": cpu, "rss": rss}


def oha(url, seconds, conns):
    out, cpu, rss = timed(["oha", "-z", f"{seconds}s", "-c", str(conns), "--no-tui", "--output-format", "json", url])
    d = json.loads(out)
    n = sum(d["statusCodeDistribution"].values())
    return {"rps": d["summary"]["requestsPerSec"], "requests": n, "cpu": cpu, "rss": rss}


def h2load(url, seconds, conns, streams):
    out, cpu, rss = timed(["h2load", "-c", str(conns), "-t", "1", "-m", str(streams), "-D", str(seconds), url])
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    n = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    return {"rps": rps, "requests": n, "cpu": cpu, "rss": rss}


def summary(name, runs):
    rps = [r["rps"] for r in runs]
    eff = [r["requests"] / r["cpu"] for r in runs if r["cpu"] > 0]
    return {"name": name, "rps": statistics.median(rps), "rps_spread": (min(rps), max(rps)),
            "eff": statistics.median(eff) if eff else 0.0, "cpu": statistics.median(r["cpu"] for r in runs)}


def ratio_line(ours, peer, goal):
    r_rps, r_eff = ours["rps"] / peer["rps"], ours["eff"] / peer["eff"]
    verdict = "meets" if r_eff >= goal else "MISSES"
    return (f"  meshbench / {peer['name']}: rps {r_rps:.2f}x, requests per CPU-second {r_eff:.2f}x "
            f"(goal >= {goal}x: {verdict})")


def throughput(args):
    print("== throughput: closed loop, 1 thread each, nginx static backend on CPU 0, generator on CPU 1")
    ngx = Nginx()
    try:
        h1 = f"http://127.0.0.1:{ngx.h1}/"
        h2 = f"http://127.0.0.1:{ngx.h2c}/"
        c, s = args.connections, args.seconds
        runs = {k: [] for k in ["meshbench-h1", "wrk", "oha", "meshbench-h2c", "h2load"]}
        for rnd in range(args.rounds):
            order = [("meshbench-h1", lambda: meshbench(h1, s, c)), ("wrk", lambda: wrk(h1, s, c)),
                     ("oha", lambda: oha(h1, s, c)), ("meshbench-h2c", lambda: meshbench(h2, s, c, ["-p", "h2"])),
                     ("h2load", lambda: h2load(h2, s, c, 1))]
            if rnd % 2:
                order.reverse()
            for name, fn in order:
                runs[name].append(fn())
        sums = {k: summary(k, v) for k, v in runs.items()}
        print(f"  {'generator':<15}{'rps (median)':>14}{'spread':>22}{'CPU-s':>8}{'req/CPU-s':>12}")
        for k, v in sums.items():
            lo, hi = v["rps_spread"]
            print(f"  {k:<15}{v['rps']:>14.0f}{f'{lo:.0f}..{hi:.0f}':>22}{v['cpu']:>8.2f}{v['eff']:>12.0f}")
        print(ratio_line(sums["meshbench-h1"], sums["wrk"], 1.0))
        print(ratio_line(sums["meshbench-h1"], sums["oha"], 2.0))
        print(ratio_line(sums["meshbench-h2c"], sums["h2load"], 1.0))
        busy = max(r["result"]["generator"]["max_worker_busy"] for r in runs["meshbench-h1"])
        print(f"  bottleneck: meshbench's worker was at most {busy * 100:.0f}% busy; "
              + ("nginx (one worker on CPU 0) is the ceiling, so compare requests per CPU-second, not rps"
                 if busy < 0.9 else "the generator ran at a full core"))
    finally:
        ngx.stop()


def accuracy(args):
    delay = 2
    print(f"== open-loop accuracy: backend with a fixed {delay} ms delay, {args.connections} connections")
    srv = DelayServer(delay)
    try:
        url = f"http://{srv.addr}/"
        top = meshbench(url, args.seconds, args.connections)["rps"]
        base = meshbench(url, args.seconds, 1)["result"]["latency_us"]["p50"] / 1000
        print(f"  measured maximum (closed loop): {top:.0f} rps; service time p50 (closed loop, 1 connection): {base:.2f} ms")
        for frac in (0.1, 0.5, 0.8):
            rate = round(top * frac)
            r = meshbench(url, args.seconds, args.connections, ["-R", str(rate)])["result"]
            achieved = r["rps"]
            err = abs(achieved - rate) / rate * 100
            p50 = r["latency_us"]["p50"] / 1000
            ok = "within 1%" if err <= 1 else "OFF BY MORE THAN 1%"
            print(f"  {int(frac * 100):>3}%: asked {rate} rps, achieved {achieved:.1f} ({err:.2f}%, {ok}); "
                  f"p50 {p50:.2f} ms ({p50 - base:+.2f} ms from the service time), late {r['late']}")
    finally:
        srv.stop()


def omission(args):
    rate, secs, stall = 1000, 10, 1.0
    print(f"== coordinated omission: {rate} rps for {secs} s, the backend stalls {stall} s once (at 5 s)")
    srv = DelayServer(1, 5.0, stall)
    try:
        r = meshbench(f"http://{srv.addr}/", secs, 16, ["-R", str(rate)])["result"]
        c, u = r["latency_us"], r["latency_uncorrected_us"]
        # By hand: requests intended during the stall (10% of all) wait from their intended start
        # until it ends, uniformly 0..1 s; the worst 1% of all requests are the first tenth of them,
        # so the corrected p99 is ~0.9 s. Only the 16 requests in flight when the stall began see it
        # from their actual send: 0.16% of requests, so the uncorrected p99 stays at the delay.
        print(f"  corrected   p50 {c['p50'] / 1000:.1f} ms  p99 {c['p99'] / 1000:.1f} ms  max {c['max'] / 1000:.1f} ms"
              f"   (expected p99 ~900 ms)")
        print(f"  uncorrected p50 {u['p50'] / 1000:.1f} ms  p99 {u['p99'] / 1000:.1f} ms  max {u['max'] / 1000:.1f} ms"
              f"   (expected p99 ~1 ms, max ~1000 ms)")
        shows = c["p99"] >= 500_000 and u["p99"] < 50_000
        print("  " + ("the corrected p99 shows the stall and the uncorrected does not" if shows
                      else "UNEXPECTED: the correction does not show the stall as computed"))
    finally:
        srv.stop()


def memory(args):
    print("== memory: peak RSS of meshbench at 2000 rps, 30 s vs 300 s")
    ngx = Nginx()
    try:
        url = f"http://127.0.0.1:{ngx.h1}/"
        short = meshbench(url, 30, 16, ["-R", "2000"])["rss"]
        long = meshbench(url, 300, 16, ["-R", "2000"])["rss"]
        print(f"  30 s: {short} KiB, 300 s: {long} KiB, ratio {long / short:.3f} "
              + ("(within 10%)" if abs(long / short - 1) <= 0.10 else "(GROWS MORE THAN 10%)"))
    finally:
        ngx.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--only", choices=["throughput", "accuracy", "omission", "memory"])
    p.add_argument("--memory", action="store_true", help="also run the 6-minute memory benchmark")
    args = p.parse_args()
    for tool in ["nginx", "wrk", "oha", "h2load", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run ci/bench/install-peers.sh")
    build()
    steps = {"throughput": throughput, "accuracy": accuracy, "omission": omission, "memory": memory}
    chosen = [args.only] if args.only else ["throughput", "accuracy", "omission"] + (["memory"] if args.memory else [])
    for name in chosen:
        steps[name](args)


if __name__ == "__main__":
    main()
