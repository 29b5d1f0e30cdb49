#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60; the hardening
# issue's figure is 600), on nightly, with the repository's examples and suites as seeds. A crash
# leaves its input in fuzz/artifacts/TARGET/ and stops the script; turn it into a test.
#
#     ci/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config tls_hello h1_response suite hlog)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
declare -A seeds=([config]=../examples [suite]=../suites/conformance)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  seed=()
  if [ -n "${seeds[$t]:-}" ]; then
    mkdir -p "seeds/$t"
    find "${seeds[$t]}" -name '*.yaml' -exec cp {} "seeds/$t/" \;
    seed=("seeds/$t")
  fi
  echo "== fuzz $t for ${secs}s"
  log="corpus/$t.log"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" "${seed[@]}" -- \
    -max_total_time="$secs" -max_len=16384 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^(#[0-9]+.*(DONE|cov:))|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tail -n 4
done
