#!/usr/bin/env python3
"""How validation, analysis and planning scale with config size: doubles each shape of config
five times and prints time and peak memory of `meshbench validate` and `meshbench plan`, with the
ratio to the previous size (linear is 2.0x per doubling; the goal is at most 2.2x).

    cargo build --release -p meshbench -p meshgate && python3 ci/bench/scale.py [--start 1250] [--doublings 5]

Shapes: `hosts` (one VirtualService with N hosts), `service-entries` (N ServiceEntries, each with
an endpoint), `services` (N ServiceEntries, each with a WorkloadEntry, a DestinationRule with two
subsets and a VirtualService routing to it, all bound to one gateway: 4N resources),
`namespaces` (the same spread over N/10 namespaces, with exportTo).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*/*']
---
"""


def hosts(n):
    out = [GATEWAY, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: many, namespace: apps}\nspec:\n  hosts:\n"]
    out += [f"  - h{i}.example.com\n" for i in range(n)]
    out.append("  gateways: [istio-system/gw]\n  http:\n  - route: [{destination: {host: web.apps.svc.cluster.local, port: {number: 80}}}]\n")
    return "".join(out)


def service_entries(n, namespaces=1):
    out = [GATEWAY]
    for i in range(n):
        ns = f"ns{i % namespaces}" if namespaces > 1 else "apps"
        export = "\n  exportTo: ['*']" if namespaces > 1 else ""
        out.append(
            f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}, namespace: {ns}}}\nspec:\n"
            f"  hosts: [s{i}.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC{export}\n"
            f"  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  workloadSelector: {{labels: {{app: s{i}}}}}\n---\n"
            f"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: s{i}, namespace: {ns}}}\n"
            f"spec: {{address: 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}, labels: {{app: s{i}, version: v1}}}}\n---\n"
            f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: s{i}, namespace: {ns}}}\n"
            f"spec: {{host: s{i}.example.com, subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]}}\n---\n"
            f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: s{i}, namespace: {ns}}}\n"
            f"spec: {{hosts: [s{i}.example.com], gateways: [istio-system/gw], http: [{{route: [{{destination: {{host: s{i}.example.com, subset: v1}}}}]}}]}}\n---\n"
        )
    return "".join(out)


def plain_service_entries(n):
    """N ServiceEntries, each with its own endpoint (the issue's "40,000 ServiceEntries")."""
    out = [GATEWAY]
    for i in range(n):
        out.append(
            f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}, namespace: apps}}\nspec:\n"
            f"  hosts: [s{i}.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
            f"  ports: [{{number: 80, name: http, protocol: HTTP}}]\n"
            f"  endpoints: [{{address: 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}}}]\n---\n"
        )
    return "".join(out)


SHAPES = {
    "hosts": hosts,
    "service-entries": plain_service_entries,
    "services": service_entries,
    "namespaces": lambda n: service_entries(n, namespaces=max(2, n // 10)),
}


def instructions(cmd):
    """Instructions executed by a command, counted by callgrind: the same for the same binary and
    input whatever else the machine does, so its ratio per doubling is the algorithm's, without
    the memory system's and the neighbours' share of the time."""
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split(":")[-1])
    sys.exit(f"no instruction count from callgrind for {' '.join(cmd)}: {p.stderr[-500:]}")


def measure(cmd, runs):
    """(seconds, peak RSS MiB) of a command, via GNU time: the fastest of `runs` runs (a shared
    machine only ever adds time)."""
    best = None
    for _ in range(runs):
        t = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.monotonic() - t
        if p.returncode not in (0, 1):
            sys.exit(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-1000:]}")
        mib = int(p.stderr.strip().splitlines()[-1]) / 1024
        best = (elapsed, mib) if best is None or elapsed < best[0] else best
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start", type=int, default=1250)
    ap.add_argument("--doublings", type=int, default=5)
    ap.add_argument("--shape", choices=sorted(SHAPES), action="append")
    ap.add_argument("--meshbench", default=os.path.join(ROOT, "target/release/meshbench"))
    ap.add_argument("--runs", type=int, default=3, help="runs per point; the fastest counts")
    ap.add_argument("--meshgate", default=os.path.join(ROOT, "target/release/meshgate"))
    ap.add_argument("--instructions", action="store_true",
                    help="also count instructions with callgrind (about 50x slower; use --doublings 2 or 3)")
    ap.add_argument("--reload", type=int, default=40000, metavar="N",
                    help="also time a running meshgate's reload to N ServiceEntries (0: skip)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="meshbench-scale-")
    worst = 0.0
    head = "| shape | size | command | seconds | ratio | peak MiB | ratio |"
    rule = "|---|---|---|---|---|---|---|"
    if args.instructions:
        head += " instructions | ratio |"
        rule += "---|---|"
    print(head)
    print(rule)
    worst_ins = 0.0
    for shape in args.shape or sorted(SHAPES):
        prev = {}
        for k in range(args.doublings + 1):
            n = args.start << k
            path = os.path.join(work, f"{shape}-{n}.yaml")
            with open(path, "w") as f:
                f.write(SHAPES[shape](n))
            for name, cmd in [("validate", ["validate", path]), ("plan", ["plan", "-o", "json", "--labels", "istio=ingressgateway", path])]:
                secs, mib = measure([args.meshbench] + cmd, args.runs)
                ratio = secs / prev[name][0] if name in prev else None
                mratio = mib / prev[name][1] if name in prev else None
                # Ratios of runs under 50 ms say more about process start than about scaling.
                if ratio and prev[name][0] >= 0.05:
                    worst = max(worst, ratio)
                fmt = lambda r: f"{r:.2f}x" if r else "-"
                row = f"| {shape} | {n} | {name} | {secs:.3f} | {fmt(ratio)} | {mib:.0f} | {fmt(mratio)} |"
                ins = None
                if args.instructions:
                    ins = instructions([args.meshbench] + cmd)
                    iratio = ins / prev[name][2] if name in prev and prev[name][2] else None
                    if iratio:
                        worst_ins = max(worst_ins, iratio)
                    row += f" {ins / 1e9:.3f}G | {fmt(iratio)} |"
                print(row, flush=True)
                prev[name] = (secs, mib, ins)
    print(f"\nworst time ratio per doubling (runs over 50 ms): {worst:.2f}x (goal <= 2.2x)")
    if args.instructions:
        print(f"worst instruction-count ratio per doubling: {worst_ins:.2f}x")
    if args.reload:
        secs = reload_seconds(args.meshgate, work, args.reload)
        print(f"meshgate reload of {args.reload} ServiceEntries: {secs:.2f} s from the file's change to the new version in force (goal < 3 s)")


def reload_seconds(meshgate, work, n):
    """Seconds from writing a config of `n` ServiceEntries into a running meshgate's config
    folder to its ready file naming the new version (the watcher looks every 100 ms)."""
    conf = os.path.join(work, "reload")
    os.makedirs(conf, exist_ok=True)
    path = os.path.join(conf, "mesh.yaml")
    with open(path, "w") as f:
        f.write(plain_service_entries(1))
    ready = os.path.join(work, "ready.json")
    cmd = [meshgate, "-c", conf, "--port-map", "80=127.0.0.1:0", "--admin", "127.0.0.1:0",
           "--ready-file", ready, "--access-log", "off", "--watch-interval", "100ms"]
    gw = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        version = lambda: json.load(open(ready)).get("version") if os.path.exists(ready) else None
        deadline = time.monotonic() + 30
        while version() != 1:
            if time.monotonic() > deadline or gw.poll() is not None:
                sys.exit("meshgate did not start")
            time.sleep(0.05)
        text = plain_service_entries(n)
        tmp = os.path.join(work, "mesh.yaml.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        t = time.monotonic()
        os.rename(tmp, path)
        while version() != 2:
            if time.monotonic() - t > 120 or gw.poll() is not None:
                sys.exit("meshgate did not reload")
            time.sleep(0.01)
        return time.monotonic() - t
    finally:
        gw.terminate()
        gw.wait()


if __name__ == "__main__":
    main()
