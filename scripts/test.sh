#!/usr/bin/env bash
# Sets up everything a fresh machine needs, then runs every check and test. Run as root:
# the kernel tests load XDP programs and make network namespaces (CI runs this as root).
#
# A run fails if any test fails, if any test is ignored (a skipped kernel test is a green lie),
# or if fewer tests passed than the count kept in .ci/min-tests (tests that vanish, say a test
# binary that stopped being built, must not look like success).
#
#   scripts/test.sh                  the whole run; the test log is kept in target/test.log
#   scripts/test.sh --check-log LOG  only the checks above, on the log of an earlier run
set -euo pipefail
cd "$(dirname "$0")/.."

min_file=.ci/min-tests

# check_log LOG MIN: sums the `test result:` lines of a cargo test log, names each test binary
# with ignored tests, compares the passed total with MIN, and prints `total: N passed, N failed`
# as its last line (CI reads it). Fails if anything failed, was ignored, or fewer than MIN passed.
check_log() {
    awk -v min="$2" -v min_file="$min_file" '
        # "     Running tests/journey.rs (target/debug/deps/journey-...)", "   Doc-tests groundzero"
        /^ *Running / { binary = $2 }
        /^ *Doc-tests / { binary = "doc-tests " $2 }
        /^test result:/ {
            # "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ..."
            for (i = 2; i <= NF; i++) {
                word = $i
                sub(/[;,]$/, "", word)
                if (word == "passed") p = $(i - 1)
                else if (word == "failed") f = $(i - 1)
                else if (word == "ignored") g = $(i - 1)
            }
            passed += p; failed += f; ignored += g; results++
            if (f > 0) printf "failed: %d test(s) in %s\n", f, binary
            if (g > 0) printf "ignored: %d test(s) in %s\n", g, binary
            p = f = g = 0
        }
        END {
            bad = 0
            if (results == 0) { print "no `test result:` line in the log: did the tests run?"; bad = 1 }
            if (ignored > 0) {
                printf "%d test(s) ignored: run every test (drop the #[ignore]) or delete it\n", ignored
                bad = 1
            }
            if (passed < min) {
                printf "only %d tests passed, but %s says %d ran before. ", passed, min_file, min
                printf "If tests were removed on purpose, write the new count to %s: ", min_file
                print "cargo test --workspace --locked -- --list 2>/dev/null | grep -c \": test$\""
                bad = 1
            } else if (passed > min) {
                printf "note: %d tests passed, more than the %d in %s: raise it to keep them\n", passed, min, min_file
            }
            if (failed > 0) bad = 1
            printf "total: %d passed, %d failed\n", passed, failed
            exit bad
        }' "$1"
}

min_tests() {
    local min
    min=$(tr -d '[:space:]' < "$min_file")
    if ! [[ $min =~ ^[0-9]+$ ]]; then
        echo "$min_file must hold one number (the count of tests), not '$min'" >&2
        exit 2
    fi
    echo "$min"
}

# An assignment, so that a bad count file stops the script here (set -e).
min=$(min_tests)
if [[ ${1:-} == --check-log ]]; then
    check_log "${2:?usage: scripts/test.sh --check-log LOG}" "$min"
    exit
fi

bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== format"
cargo fmt --all --check
(cd crates/groundzero-ebpf && cargo fmt --check)
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
# The older build the layout-migration tests upgrade from (skipped when already built).
bash scripts/build-previous.sh
# --no-fail-fast: one failing test binary must not hide the results of the others. The run's
# status is remembered, not acted on, so the benchmark smoke and the checks below still run.
mkdir -p target
log=target/test.log
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=1
echo "== benchmark smoke"
cargo run -p groundzero-bench --release --locked -- --smoke --out "$(mktemp -d)" || status=1

echo "== results (log: $log)"
# The last thing printed is the total over every test binary: cargo's own last line belongs
# to the doc tests, which have none, and would read as "ran no test".
check_log "$log" "$min" || status=1
exit "$status"
