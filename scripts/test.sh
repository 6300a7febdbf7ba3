#!/usr/bin/env bash
# Everything CI checks, in one command (README "Run the tests"; .ci/run runs exactly this):
#   1. install the test packages (apt, idempotent),
#   2. cargo build --release --all-targets, cargo test --release (one crate of integration
#      tests, tests/it/, so it compiles once),
#   3. the libiscsi conformance matrix against target/release/tgtd (tests/conformance),
# then one final line "N passed, M failed" over all of it. Exits non-zero on any failure.
#
#   bash scripts/test.sh
# Environment: TARGET=tgt runs the conformance matrix against Debian's tgtd instead of ours;
# SKIP_CONFORMANCE=1 stops after cargo test; LUS="thick thin" limits the matrix;
# SKIP_FUZZ=1 / SKIP_KERNEL_INITIATOR=1 leave out the fuzz smoke run / the QEMU guest;
# TEST_LOG_DIR (default target/test-logs/<UTC time>) keeps every log.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
TEST_LOG_DIR=${TEST_LOG_DIR:-$REPO/target/test-logs/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$TEST_LOG_DIR"

passed=0 failed=0
steps=()
step() { # NAME STATUS: remember a step's outcome for the summary
  steps+=("$(printf '%-28s %s' "$1" "$2")")
}
banner() { printf '\n===== %s =====\n' "$*"; }
t_start=$(date +%s)

banner "dependencies"
bash scripts/install-deps.sh

banner "cargo build --release"
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (https://rustup.rs)" >&2; exit 1; }
# --all-targets: the test targets' dev-dependencies (proptest, tempfile) change the features of
# shared dependencies, so a plain `cargo build --release` is a different build, and `cargo test
# --release` below would compile the library, both binaries and a dozen crates a second time.
# Built together, cargo test finds everything fresh, and target/release/tgtd (conformance) is
# the very binary the integration tests ran.
if cargo build --release --all-targets 2>&1 | tee "$TEST_LOG_DIR/cargo-build.log"; then
  step "cargo build --release" ok
else
  step "cargo build --release" FAILED; failed=$((failed + 1))
fi

banner "cargo test --release"
rc=0
cargo test --release 2>&1 | tee "$TEST_LOG_DIR/cargo-test.log" || rc=$?
# Sum cargo's per-binary summary lines: "test result: ok. 12 passed; 0 failed; 1 ignored; ..."
read -r cp cf < <(awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$TEST_LOG_DIR/cargo-test.log")
passed=$((passed + cp)); failed=$((failed + cf))
if [ "$rc" -ne 0 ] && [ "$cf" -eq 0 ]; then failed=$((failed + 1)); fi   # failed to build or crashed
step "cargo test --release" "$cp passed, $cf failed (exit $rc)"

if [ -z "${SKIP_CONFORMANCE:-}" ]; then
  banner "conformance matrix (TARGET=${TARGET:-ours})"
  rc=0
  # shellcheck disable=SC2086  # LUS is a word list
  RESULTS="$TEST_LOG_DIR/conformance" bash tests/conformance/run-matrix.sh ${LUS:-} 2>&1 \
    | tee "$TEST_LOG_DIR/conformance.log" || rc=$?
  line=$(grep -E '^conformance \(.*\): [0-9]+ passed, [0-9]+ failed' "$TEST_LOG_DIR/conformance.log" | tail -n 1 || true)
  if [ -n "$line" ]; then
    read -r xp xf < <(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/' <<<"$line")
  else
    xp=0 xf=1   # the harness itself failed (target did not start, ...)
  fi
  if [ "$rc" -ne 0 ] && [ "$xf" -eq 0 ]; then xf=1; fi
  passed=$((passed + xp)); failed=$((failed + xf))
  step "conformance" "$xp passed, $xf failed (exit $rc; logs $TEST_LOG_DIR/conformance)"
fi

if [ -z "${SKIP_FUZZ:-}" ]; then
  # A short run of every fuzz target (issue 11): the corpus replayed as tests, then a few
  # seconds of libFuzzer each. CI builds them without ASan to stay quick; long runs with ASan
  # are scripts/fuzz.sh's default.
  banner "fuzz smoke"
  rc=0
  FUZZ_SANITIZER=${FUZZ_SANITIZER:-none} FUZZ_SMOKE_SECS=${FUZZ_SMOKE_SECS:-5} \
    bash scripts/fuzz.sh --smoke 2>&1 | tee "$TEST_LOG_DIR/fuzz.log" || rc=$?
  read -r fp ff < <(sed -nE 's/^fuzz smoke: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' "$TEST_LOG_DIR/fuzz.log" | tail -n 1)
  fp=${fp:-0} ff=${ff:-1}
  if [ "$rc" -ne 0 ] && [ "$ff" -eq 0 ]; then ff=1; fi
  passed=$((passed + fp)); failed=$((failed + ff))
  step "fuzz smoke" "$fp passed, $ff failed (exit $rc)"
fi

if [ -z "${SKIP_KERNEL_INITIATOR:-}" ]; then
  banner "Linux kernel initiator (QEMU guest)"
  rc=0
  KI_LOGS="$TEST_LOG_DIR/kernel-initiator" bash tests/kernel_initiator.sh 2>&1 \
    | tee "$TEST_LOG_DIR/kernel-initiator.log" || rc=$?
  line=$(grep -E '^kernel_initiator: [0-9]+ passed, [0-9]+ failed' "$TEST_LOG_DIR/kernel-initiator.log" | tail -n 1 || true)
  if [ -n "$line" ]; then
    read -r kp kf < <(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/' <<<"$line")
  else
    kp=0 kf=1   # the harness could not run
  fi
  if [ "$rc" -ne 0 ] && [ "$kf" -eq 0 ]; then kf=1; fi
  passed=$((passed + kp)); failed=$((failed + kf))
  step "kernel initiator" "$kp passed, $kf failed (exit $rc; logs $TEST_LOG_DIR/kernel-initiator)"
fi

banner "summary ($(( $(date +%s) - t_start ))s, logs in $TEST_LOG_DIR)"
printf '%s\n' "${steps[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
