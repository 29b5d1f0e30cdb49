#!/usr/bin/env bash
# Installs the peers the benchmarks compare against: nginx (backend and proxy), HAProxy, wrk,
# h2load (Debian) and oha (crates.io); Envoy comes from ci/install-envoy.sh. Idempotent.
set -euo pipefail
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v taskset >/dev/null || missing+=(util-linux)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v oha >/dev/null; then
  cargo install oha --locked
fi
