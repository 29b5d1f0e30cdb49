#!/usr/bin/env python3
"""User-space instructions per request through meshgate, under valgrind's callgrind: a figure
that repeats from run to run on a shared, noisy machine where throughput does not.

One meshgate worker (the release binary, or each of --binary A,B to compare two builds) runs
under `valgrind --tool=callgrind`; h2load sends N1 and then N2 requests on fresh starts; the
figure is (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up and config loading cancel out. Kinds:
  h1    HTTP/1.1, one route to an nginx static backend (h2load --h1 -c8)
  shaped
        HTTP/1.1 through gateway.py's Istio-shaped config (10 VirtualServices, 50 regex + header
        routes, the request taking the last of its host's 41), to the same nginx backend
  grpc  gRPC unary (one framed EchoRequest per call) through an h2 upstream to meshbench's echo
        (h2load -c8 -m4)

  ci/bench/install-peers.sh && python3 ci/bench/instructions.py [--kinds h1,shaped,grpc]
      [--requests 1000,3000] [--binary target/release/meshgate,/tmp/other-meshgate] [--keep DIR]

--keep DIR leaves the callgrind files in DIR, for `callgrind_annotate DIR/callgrind.grpc.3000.*`.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway as g  # noqa: E402
from loadgen import ROOT, MESHBENCH, free_port, wait_port  # noqa: E402


# glibc's memcpy copies large blocks with `rep movsb` or with vector loops depending on the block's
# size and on how its source and destination addresses line up, which moves with any change to
# the binary. Callgrind counts each byte of a `rep movsb` as an instruction and a vector loop's
# 128 bytes as a few, so a large future moved across the threshold swung the figure by 60% from
# one build to the next. These tunables keep every copy on the vector loop.
STEADY_MEMCPY = dict(os.environ, GLIBC_TUNABLES="glibc.cpu.x86_rep_movsb_threshold=4294967295:"
                     "glibc.cpu.x86_non_temporal_threshold=4294967295")


def instructions(binary, config_dir, kind, n, body, out_dir):
    """Instructions meshgate executed (all its threads) while serving `n` requests of `kind`."""
    port = free_port()
    # One file name per build (not its base name: "meshgate*" would also match "meshgate-old").
    out = os.path.join(out_dir, f"callgrind.{kind}.{n}.{abs(hash(binary))}")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "-c", config_dir,
                             "--labels", "app=bench", "--port-map", f"80=127.0.0.1:{port}", "--admin", "127.0.0.1:0",
                             "--access-log", "off", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=STEADY_MEMCPY)
    try:
        wait_port(port, 120)
        if kind == "grpc":
            cmd = ["h2load", "-n", str(n), "-c8", "-m4", "-t1", "-H", "content-type: application/grpc",
                   "-H", "te: trailers", "-d", body, f"http://127.0.0.1:{port}{g.GRPC_PATH}"]
        elif kind == "shaped":
            # h2load sets the authority by its pseudo-header, for HTTP/1.1 too.
            headers = [a for h in g.SHAPED_HEADERS for a in ["-H", h.replace("Host:", ":authority:")]]
            cmd = ["h2load", "--h1", "-n", str(n), "-c8", "-t1", *headers, f"http://127.0.0.1:{port}{g.SHAPED_PATH}"]
        else:
            cmd = ["h2load", "--h1", "-n", str(n), "-c8", "-t1", f"http://127.0.0.1:{port}/"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        codes = re.search(r"status codes: (\d+) 2xx", r.stdout)
        if not codes or int(codes.group(1)) != n:
            sys.exit(f"{kind} through {binary}: not every response was 2xx:\n{r.stdout}")
    finally:
        proc.terminate()
        proc.wait()
    total = 0
    for f in glob.glob(out) + glob.glob(out + ".*"):
        with open(f) as fh:
            for line in fh:
                if line.startswith(("summary:", "totals:")):
                    total += int(line.split()[1])
                    break
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", default="h1,grpc")
    p.add_argument("--requests", default="1000,3000")
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "meshgate"))
    p.add_argument("--keep", metavar="DIR", help="leave the callgrind files in DIR")
    args = p.parse_args()
    for tool in ["valgrind", "h2load", "nginx", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run ci/bench/install-peers.sh (valgrind: apt-get install valgrind)")
    n1, n2 = (int(x) for x in args.requests.split(","))
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "meshgate", "-p", "meshbench"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="meshbench-instructions-")
    out_dir = args.keep or work
    os.makedirs(out_dir, exist_ok=True)
    grpc_port, backend_port = free_port(), free_port()
    echo = g.start([MESHBENCH, "echo", "--service", "grpc", "--grpc", f"127.0.0.1:{grpc_port}"], "0")
    bdir, bconf = g.nginx(f'server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 "hello\\n"; }} }}',
                          "backend")
    backend = g.start(["nginx", "-c", bconf, "-p", bdir], "0")
    try:
        wait_port(grpc_port)
        wait_port(backend_port)
        configs = {kind: os.path.join(work, kind) for kind in ["grpc", "h1", "shaped"]}
        for d in configs.values():
            os.makedirs(d)
        g.write(configs["grpc"], "config.yaml",
                g.GATEWAY.format(backend_port=grpc_port) + g.GRPC_ROUTE.format(grpc_port=grpc_port))
        g.write(configs["h1"], "config.yaml", g.GATEWAY.format(backend_port=backend_port) + g.ONE_ROUTE)
        g.write(configs["shaped"], "config.yaml", g.GATEWAY.format(backend_port=backend_port) + g.istio_shaped())
        body = g.grpc_request_file(work)
        for kind in args.kinds.split(","):
            for binary in args.binary.split(","):
                low = instructions(binary, configs[kind], kind, n1, body, out_dir)
                high = instructions(binary, configs[kind], kind, n2, body, out_dir)
                print(f"{kind:<5} {binary}: {(high - low) / (n2 - n1):,.0f} instructions per request"
                      f" ({low:,} for {n1}, {high:,} for {n2})")
    finally:
        echo.terminate()
        backend.terminate()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(bdir, ignore_errors=True)


if __name__ == "__main__":
    main()
