#!/usr/bin/env bash
# Mutation testing with cargo-mutants (crates.io): each mutant changes one operator or return
# value in the code, and some test has to fail for it. With no FILE, the mutants are those in the
# lines changed since REF (default: where this branch left origin/main, else the last commit);
# with FILEs, every mutant in them. Exclusions of equivalent mutants, each with its reason, are in
# .cargo/mutants.toml. Prints caught / missed / timeout / unviable and exits 1 on a missed mutant.
#
#     ci/mutants.sh [--since REF] [--lib-only] [FILE…] [-- CARGO-TEST-ARGS…]
#
# --lib-only runs only the package's unit tests for each mutant (fast, for files whose behaviour
# the unit tests cover); without it the package's integration tests run too. Arguments after
# `--` go to `cargo test`, e.g. `-- --test http` for one integration test file.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null 2>&1 || cargo install --locked cargo-mutants
since="" files=() test_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --since) since=$2; shift 2 ;;
    --lib-only) test_args=(-- --lib); shift ;;
    --) shift; test_args=(-- "$@"); break ;;
    *) files+=("$1"); shift ;;
  esac
done
out=target/mutants-run
mkdir -p "$out"
args=(--no-shuffle --output "$out")
if [ ${#files[@]} -gt 0 ]; then
  for f in "${files[@]}"; do args+=(--file "$f"); done
else
  since=${since:-$(git merge-base HEAD origin/main 2>/dev/null || echo HEAD~1)}
  git diff "$since" -- '*.rs' >"$out/changes.diff"
  if [ ! -s "$out/changes.diff" ]; then
    echo "no Rust changes since $since"
    exit 0
  fi
  args+=(--in-diff "$out/changes.diff")
fi
status=0
cargo mutants "${args[@]}" "${test_args[@]}" || status=$?
outcomes="$out/mutants.out/outcomes.json"
if [ -f "$outcomes" ]; then
  python3 - "$outcomes" <<'PY' || status=2
import collections, json, sys
d = json.load(open(sys.argv[1]))
count = collections.Counter(o["summary"] for o in d["outcomes"] if o["scenario"] != "Baseline")
viable = count["CaughtMutant"] + count["MissedMutant"] + count["Timeout"]
caught = count["CaughtMutant"] + count["Timeout"]
print(f"mutants: {caught}/{viable} viable caught ({100 * caught / max(viable, 1):.1f}%), "
      f"{count['MissedMutant']} missed, {count['Timeout']} timeout, {count['Unviable']} unviable")
# A missed mutant fails the run even when a timeout set cargo-mutants' own exit code to 3.
sys.exit(2 if count["MissedMutant"] else 0)
PY
fi
# cargo-mutants exits 2 for missed mutants, 3 for timeouts (caught: a test hung), 4 for a failing baseline.
case $status in 0) exit 0 ;; 3) exit 0 ;; *) exit 1 ;; esac
