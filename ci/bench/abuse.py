#!/usr/bin/env python3
"""Replays the hardening probes against meshgate on loopback and prints pass/fail per probe, and the
same probes against nginx and Envoy (same header timeout, one worker) for comparison:
slowloris, an idle-connection flood under a low open-file limit, a body flood, an alias bomb
dropped into the watched config, and SIGTERM under a steady client. During each attack a normal
request must be answered in under 50 ms.

    cargo build --release --workspace && python3 ci/bench/abuse.py [--peers nginx,envoy]

meshgate runs with short timeouts so the probes end in seconds (`--request-headers-timeout 3s`);
the defaults are Envoy's (see the README). Every loop is bounded in count and time.
"""

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target/release")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(echo_port):
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.example.com]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {echo_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: web.example.com}}}}]
"""


def alias_bomb():
    lines = ["apiVersion: networking.istio.io/v1", "kind: ServiceEntry", "metadata: {name: lol, namespace: default}",
             "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    lines.append("spec: {hosts: [lol.example.com], ports: [{number: 80, name: http, protocol: HTTP}], lol: *a9}")
    return "\n".join(lines) + "\n"


class Proxy:
    """A proxy under test on 127.0.0.1:port in front of the echo workload."""

    name = "proxy"

    def start(self, cmd, nofile):
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
        self.stderr = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr, preexec_fn=limit)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if normal_request(self.port)[0] == 200:
                return
            time.sleep(0.05)
        self.stop()
        sys.exit(f"{self.name} did not start: {open(self.stderr.name).read()[-2000:]}")

    def rss_mib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Meshgate(Proxy):
    name = "meshgate"

    def __init__(self, work, echo_port, nofile=None):
        self.dir = tempfile.mkdtemp(dir=work)
        self.conf = os.path.join(self.dir, "conf")
        os.makedirs(self.conf)
        with open(os.path.join(self.conf, "mesh.yaml"), "w") as f:
            f.write(config(echo_port))
        self.port, admin = free_port(), free_port()
        cmd = [os.path.join(BIN, "meshgate"), "-c", self.conf, "--port-map", f"80=127.0.0.1:{self.port}",
               "--admin", f"127.0.0.1:{admin}", "--access-log", "off", "--watch-interval", "200ms",
               "--request-headers-timeout", "3s", "--drain-time", "2s"]
        self.start(cmd, nofile)


class Nginx(Proxy):
    """nginx with the same header timeout and body limit, one worker, keep-alive upstream."""

    name = "nginx"

    def __init__(self, work, echo_port, nofile=None):
        self.dir = tempfile.mkdtemp(dir=work)
        self.port = free_port()
        d = self.dir
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off; client_header_timeout 3s; client_max_body_size 16m;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream app {{ server 127.0.0.1:{echo_port}; keepalive 16; }}
  server {{ listen 127.0.0.1:{self.port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
}}
""")
        self.start(["nginx", "-c", conf, "-p", d], nofile)


class Envoy(Proxy):
    """Envoy with the same header timeout, one worker, a static route to the echo workload."""

    name = "envoy"

    def __init__(self, work, echo_port, nofile=None):
        self.dir = tempfile.mkdtemp(dir=work)
        self.port, admin = free_port(), free_port()
        conf = os.path.join(self.dir, "envoy.yaml")
        with open(conf, "w") as f:
            f.write(f"""admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: {self.port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          request_headers_timeout: 3s
          route_config:
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: echo}}}}]}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: echo
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {echo_port}}}}}}}}}]}}]
""")
        cmd = [envoy_binary(), "-c", conf, "--concurrency", "1", "--log-level", "warn", "--drain-time-s", "2",
               "--base-id", str(free_port())]
        self.start(cmd, nofile)


def envoy_binary():
    found = subprocess.run(["bash", os.path.join(ROOT, "ci/install-envoy.sh")], capture_output=True, text=True)
    return found.stdout.strip() or "envoy"


def normal_request(port, timeout=5.0):
    """(status, seconds) of one GET on a new connection; status 0 when it failed."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    except OSError:
        status = 0
    return status, time.monotonic() - start


def worst_normal(port, n=20):
    """The slowest of `n` normal requests, or None when one failed."""
    worst = 0.0
    for _ in range(n):
        status, secs = normal_request(port)
        if status != 200:
            return None
        worst = max(worst, secs)
        time.sleep(0.02)
    return worst


def slowloris(gw):
    conns = []
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET / HTTP/1.1\r\nHo")
        conns.append(s)
    worst = worst_normal(gw.port)
    # One byte each second for up to 8 s; count the connections the gateway closed.
    for _ in range(8):
        time.sleep(1)
        for s in conns:
            try:
                s.sendall(b"x")
            except OSError:
                pass
    closed = 0
    for s in conns:
        s.settimeout(0.01)
        try:
            s.recv(1024)  # end of stream, or a 408 before it
            closed += 1
        except socket.timeout:
            pass
        except OSError:
            closed += 1
        s.close()
    ok = closed == len(conns) and worst is not None and worst < 0.05
    return ok, f"{closed}/{len(conns)} closed within 8 s (headers timeout 3 s); slowest normal request {fmt(worst)}"


def idle_flood(gw):
    conns = []
    for _ in range(300):
        try:
            conns.append(socket.create_connection(("127.0.0.1", gw.port), timeout=2))
        except OSError:
            break
    time.sleep(0.5)
    worst = worst_normal(gw.port)
    cpu = cpu_seconds(gw.proc.pid)
    time.sleep(2)
    spin = cpu_seconds(gw.proc.pid) - cpu
    for s in conns:
        s.close()
    ok = worst is not None and worst < 0.05 and spin < 0.5
    return ok, f"{len(conns)} idle connections at open-file limit 256; slowest normal request {fmt(worst)}; CPU while idle {spin:.2f} s in 2 s"


def body_flood(gw):
    body = b"z" * (15 << 20)

    def upload():
        try:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
                s.sendall(b"POST /?delay=2s HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n" % len(body))
                s.sendall(body)
                s.recv(1024)
        except OSError:
            pass

    threads = [threading.Thread(target=upload) for _ in range(100)]
    for t in threads:
        t.start()
    time.sleep(1)
    worst = worst_normal(gw.port, 10)
    for t in threads:
        t.join(30)
    rss = gw.rss_mib()
    ok = rss < 256 + 128 and worst is not None and worst < 0.05
    return ok, f"100 x 15 MiB uploads with a 256 MiB budget: peak RSS {rss:.0f} MiB; slowest normal request {fmt(worst)}"


def bomb_reload(gw):
    with open(os.path.join(gw.conf, "bomb.yaml"), "w") as f:
        f.write(alias_bomb())
    deadline = time.monotonic() + 10
    log = ""
    while time.monotonic() < deadline and "aliases expand" not in log:
        time.sleep(0.1)
        log = open(gw.stderr.name).read()
    worst = worst_normal(gw.port)
    rss = gw.rss_mib()
    ok = "aliases expand" in log and worst is not None and worst < 0.05 and rss < 100
    return ok, f"diagnostic {'given' if 'aliases expand' in log else 'missing'}; peak RSS {rss:.0f} MiB; slowest normal request {fmt(worst)}"


def sigterm_under_load(gw):
    counts = {"ok": 0, "refused": 0, "reset": 0}
    stop = time.monotonic() + 1.5
    started = threading.Event()

    def client():
        s = None
        while time.monotonic() < stop:
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            except OSError:
                counts["refused"] += 1
                continue
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionResetError
                    head += chunk
                top, rest = head.split(b"\r\n\r\n", 1)
                length = int([l.split(b":")[1] for l in top.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
                while len(rest) < length:
                    rest += s.recv(65536)
                counts["ok"] += 1
                started.set()
                if b"connection: close" in top.lower():
                    s.close()
                    s = None
            except OSError:
                counts["reset"] += 1
                s = None
            time.sleep(0.002)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait(5)
    time.sleep(0.2)
    gw.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(10)
    code = gw.proc.wait(10)
    ok = counts["refused"] == 0 and counts["reset"] == 0 and counts["ok"] > 0 and code == 0
    return ok, f"{counts['ok']} answered, {counts['refused']} refused, {counts['reset']} reset through SIGTERM (drain 2 s); exit {code}"


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt(secs):
    return "failed" if secs is None else f"{secs * 1000:.1f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="nginx,envoy",
                        help="proxies to run the same probes on, for comparison (comma list; '' for none)")
    args = parser.parse_args()
    targets = [Meshgate]
    for peer in filter(None, args.peers.split(",")):
        cls = {"nginx": Nginx, "envoy": Envoy}[peer]
        if peer == "nginx" and not shutil.which("nginx"):
            print("nginx: not installed (ci/bench/install-peers.sh); skipped")
            continue
        targets.append(cls)
    work = tempfile.mkdtemp(prefix="meshbench-abuse-")
    echo_port = free_port()
    echo = subprocess.Popen([os.path.join(BIN, "meshbench"), "echo", "--service", "web", "--version", "v1",
                             "--http", f"127.0.0.1:{echo_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    probes = [
        ("slowloris (500 connections, a header byte a second)", slowloris, {}),
        ("idle-connection flood under ulimit -n 256", idle_flood, {"nofile": 256}),
        ("body flood (100 x 15 MiB)", body_flood, {}),
        ("alias bomb dropped into the config folder", bomb_reload, {"only": Meshgate}),
        ("SIGTERM under a steady client", sigterm_under_load, {}),
    ]
    failed = 0
    try:
        for name, probe, opts in probes:
            print(name, flush=True)
            for target in targets:
                if opts.get("only", target) is not target:
                    print(f"  n/a   {target.name:<8} (no watched YAML config folder)", flush=True)
                    continue
                gw = target(work, echo_port, nofile=opts.get("nofile"))
                try:
                    ok, detail = probe(gw)
                finally:
                    gw.stop()
                if target is Meshgate:
                    failed += not ok
                print(f"  {'PASS' if ok else 'FAIL'}  {target.name:<8} {detail}", flush=True)
    finally:
        echo.kill()
    print(f"\nmeshgate: {len(probes) - failed} passed, {failed} failed (peers are printed for comparison only)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
