#!/usr/bin/env bash
# Coverage-guided fuzzing of curve-tgt's parsers and protocol state machines (fuzz/README.md).
#
#   scripts/fuzz.sh --smoke            replay the corpus (cargo test in fuzz/), then run every
#                                      target briefly (FUZZ_SMOKE_SECS, default 20 s each);
#                                      last line: "fuzz smoke: N passed, M failed"
#   scripts/fuzz.sh [TARGET...]        long run: each target for FUZZ_SECS (default 3600 s),
#                                      FUZZ_PARALLEL targets at a time (default 1), niced
#   scripts/fuzz.sh --seeds            rewrite the generated seeds in fuzz/corpus/*/seed-*
#   scripts/fuzz.sh --list             print the target names
#
# FUZZ_SANITIZER=none builds without AddressSanitizer (about twice the executions per second;
# the smoke run keeps ASan for the unsafe buffer code). FUZZ_RUNS caps executions per target.
# Runs on the stable toolchain (RUSTC_BOOTSTRAP=1 for cargo-fuzz's -Z flags) and installs
# cargo-fuzz if it is missing. New inputs go to FUZZ_OUT (default target/fuzz/<target>/corpus),
# never into the repository; crashes to FUZZ_OUT/<target>/artifacts. Add a crash input to
# fuzz/corpus/<target>/ as a regression once its fix is in.
#
# Checks for bugs whose fix has not merged yet are skipped by name, listed in fuzz/known-open
# (one per line; see fuzz/src/checks.rs). CURVE_FUZZ_SKIP overrides the list.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export RUSTC_BOOTSTRAP=1

TARGETS=(pdu_frame text_negotiate login session scsi_cdb tgtadm_ipc curve_frame)
FUZZ_OUT=${FUZZ_OUT:-$REPO/target/fuzz}
SAN=${FUZZ_SANITIZER:-address}
if [ -z "${CURVE_FUZZ_SKIP+x}" ]; then
  CURVE_FUZZ_SKIP=$(grep -v '^#' fuzz/known-open 2>/dev/null | paste -sd, - || true)
fi
export CURVE_FUZZ_SKIP

# Per-target libFuzzer options: the sequence targets need longer inputs.
opts_for() {
  case "$1" in
    session | login) echo "-max_len=16384" ;;
    text_negotiate) echo "-max_len=8192 -dict=fuzz/dict/iscsi-text.dict" ;;
    tgtadm_ipc) echo "-max_len=16384 -dict=fuzz/dict/tgtadm.dict" ;;
    *) echo "-max_len=8192" ;;
  esac
}

ensure_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
  fi
}

build() {
  ensure_cargo_fuzz
  (cd fuzz && cargo fuzz build -O --debug-assertions -s "$SAN" --target-dir "target/$SAN" "$@")
}

# run_target NAME SECONDS: one libFuzzer run; prints "<name>: <runs> runs in <s> s, <result>".
run_target() {
  local t=$1 secs=$2 dir="$FUZZ_OUT/$1"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  local bin
  bin=fuzz/target/$SAN/x86_64-unknown-linux-gnu/release/$t
  local log="$dir/run-$(date -u +%Y%m%dT%H%M%SZ).log" rc=0 start=$SECONDS
  # shellcheck disable=SC2046  # options are words
  nice -n 10 "$bin" "$dir/corpus" "fuzz/corpus/$t" -max_total_time="$secs" -timeout=10 \
    -runs="${FUZZ_RUNS:--1}" \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
    $(opts_for "$t") >"$log" 2>&1 || rc=$?
  local runs
  runs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log" | tail -n 1)
  local result=ok
  [ "$rc" -eq 0 ] || result="CRASH (exit $rc; $(ls "$dir/artifacts" | tail -n 1); log $log)"
  [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  echo "$t: ${runs:-?} runs in $((SECONDS - start)) s, $result"
  [ "$rc" -eq 0 ]
}

case "${1:-}" in
  --list)
    printf '%s\n' "${TARGETS[@]}"
    ;;
  --seeds)
    (cd fuzz && FUZZ_WRITE_CORPUS=1 cargo test --lib seeds_run_clean)
    ;;
  --smoke)
    shift
    secs=${FUZZ_SMOKE_SECS:-20}
    passed=0 failed=0
    if (cd fuzz && cargo test --lib); then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    build
    for t in "${TARGETS[@]}"; do
      if run_target "$t" "$secs"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    done
    echo "fuzz smoke: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    ;;
  -h | --help)
    sed -n '2,20p' "$0"
    ;;
  *)
    secs=${FUZZ_SECS:-3600}
    par=${FUZZ_PARALLEL:-1}
    sel=("$@")
    [ ${#sel[@]} -gt 0 ] || sel=("${TARGETS[@]}")
    build
    status=0
    for ((i = 0; i < ${#sel[@]}; i += par)); do
      pids=()
      for t in "${sel[@]:i:par}"; do
        run_target "$t" "$secs" &
        pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p" || status=1; done
    done
    exit $status
    ;;
esac
