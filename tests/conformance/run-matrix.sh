#!/usr/bin/env bash
# libiscsi conformance matrix: for each kind of LU, start a fresh target, export one LU and run
# `iscsi-test-cu --dataloss` (all tests, both initiator names, and the same URL again as the
# MultipathIO second path), then compare the per-test results with expected.tsv.
#
#   tests/conformance/run-matrix.sh [LU...]        LU: thick thin thin512 readonly null delay curve curve512
#                                                   (default: all; curve, curve512 when the cluster kit exists)
#
# delay: ours only, in test mode (CURVE_TGT_TEST_ENGINES=1): a LU on the test-only `delay`
# store, whose engine has no file descriptor and completes out of order after 20-2000 µs
# (LIB_DELAY_US). It must behave as the file LU does, so its expectations are thick's.
#
# The curve LU is a 10 GiB volume of a private CurveBS cluster (../shared/curve/cluster.sh on
# free loopback ports, its own CURVE_RUN) that this script starts before and stops after.
# curve512 is the same volume served with --blocksize 512 (read-modify-write of 4 KiB blocks).
#
# Environment:
#   TARGET=ours|tgt   which tgtd to test (default ours: target/release/tgtd, built beforehand)
#   RESULTS=DIR       where logs go (default tests/conformance/results/<target>-<UTC time>)
#   EXPECTED=FILE     expectations (default tests/conformance/expected.tsv)
#   CU_TIMEOUT=S      bound on one iscsi-test-cu run (default 600 s; a full run takes ~20 s)
#   CU_STALL=S        stop iscsi-test-cu when its output has not grown for S s (default 60)
#   CU_TEST=REGEX     iscsi-test-cu --test value (default ALL)
#   LU_SIZE=SIZE      backing file size (default 128M)
#   CURVE_CLUSTER_SH=FILE  the Curve cluster kit (default ../shared/curve/cluster.sh)
#   CURVE_TMP=DIR     where the curve LU's cluster keeps its data (default $TMPDIR or /tmp)
# Exit status: 0 when no test FAILED and every expected pass passed; 1 otherwise; 2 on a
# harness error (target did not start, iscsi-test-cu missing, ...).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

TARGET=${TARGET:-ours}
EXPECTED=${EXPECTED:-$HERE/expected.tsv}
CU_TIMEOUT=${CU_TIMEOUT:-600}
CU_STALL=${CU_STALL:-60}
CU_TEST=${CU_TEST:-ALL}
LU_SIZE=${LU_SIZE:-128M}
RESULTS=${RESULTS:-$HERE/results/$TARGET-$(date -u +%Y%m%dT%H%M%SZ)}
I1=${I1:-iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test}
I2=${I2:-iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2}
IQN_BASE=iqn.2026-11.io.curve-tgt:conformance
CTRL=${CTRL:-43}

CURVE_CLUSTER_SH=${CURVE_CLUSTER_SH:-$REPO/../shared/curve/cluster.sh}
if [ $# -gt 0 ]; then LUS=("$@"); else
  LUS=(thick thin thin512 readonly null)
  if [ "$TARGET" = ours ]; then LUS+=(delay); fi
  if [ -f "$CURVE_CLUSTER_SH" ]; then LUS+=(curve curve512); else echo "no Curve cluster kit ($CURVE_CLUSTER_SH): curve LU not run" >&2; fi
fi
for lu in "${LUS[@]}"; do
  case $lu in thick|thin|thin512|readonly|null|delay|curve|curve512) ;; *) echo "unknown LU kind '$lu' (thick thin thin512 readonly null delay curve curve512)" >&2; exit 2;; esac
  if [ "$lu" = delay ] && [ "$TARGET" != ours ]; then echo "LU kind delay exists in our tgtd only" >&2; exit 2; fi
done
command -v iscsi-test-cu >/dev/null || { echo "iscsi-test-cu missing: run scripts/install-deps.sh (package libiscsi-bin)" >&2; exit 2; }
command -v ss >/dev/null || { echo "ss missing: apt-get install -y iproute2" >&2; exit 2; }

mkdir -p "$RESULTS"
export LIB_LOG_DIR=$RESULTS
LIB_DIE_STATUS=2   # a harness error (target did not start, ...) is not a test result
lib_init
log "conformance: target=$TARGET LUs=${LUS[*]} results=$RESULTS"

# The curve LU's cluster: started on first use, stopped (by cluster.sh, by PID) before the
# run directory it lives in is removed.
CURVE_UP=
curve_stop() {
  [ -n "$CURVE_UP" ] || return 0
  bash "$CURVE_CLUSTER_SH" stop >>"$RESULTS/curve-cluster.log" 2>&1 || true
  rm -rf -- "$CURVE_RUN"
  CURVE_UP=
}
trap 'curve_stop; lib_cleanup' EXIT
curve_start() { # sets CURVE_MDS
  local base i p ok=0
  [ -f "$CURVE_CLUSTER_SH" ] || die "curve LU: no Curve cluster kit at $CURVE_CLUSTER_SH"
  for ((i = 0; i < 200 && ok == 0; i++)); do
    base=$(( 20000 + RANDOM % 12000 )); ok=1
    for ((p = base; p < base + 8; p++)); do port_is_listening "$p" && { ok=0; break; }; done
  done
  [ "$ok" = 1 ] || die "curve LU: no 8 consecutive free ports"
  # Not in the run directory (tmpfs) by default: the chunk servers' files take gigabytes.
  # CURVE_TMP=/dev/shm is much faster (raft fsyncs) where memory allows (~6 GiB at peak).
  CURVE_RUN=$(mktemp -d "${CURVE_TMP:-${TMPDIR:-/tmp}}/curve-conformance.XXXXXX")
  export CURVE_RUN CURVE_ETCD_PORT=$base CURVE_MDS_PORT=$((base + 3)) CURVE_CS_PORT=$((base + 5))
  CURVE_MDS=127.0.0.1:$CURVE_MDS_PORT
  log "[curve] starting a CurveBS cluster (MDS $CURVE_MDS, CURVE_RUN=$CURVE_RUN)"
  CURVE_UP=1
  # Curve's chunk server now and then aborts while starting (glibc "unaligned tcache chunk"):
  # one more try from scratch before giving up.
  if ! bash "$CURVE_CLUSTER_SH" start >>"$RESULTS/curve-cluster.log" 2>&1; then
    log "curve: cluster start failed; retrying once (see $RESULTS/curve-cluster.log)"
    bash "$CURVE_CLUSTER_SH" stop >>"$RESULTS/curve-cluster.log" 2>&1 || true
    rm -rf -- "${CURVE_RUN:?}"/*
    bash "$CURVE_CLUSTER_SH" start >>"$RESULTS/curve-cluster.log" 2>&1 || die "curve: cluster start failed twice (see $RESULTS/curve-cluster.log)"
  fi
  bash "$CURVE_CLUSTER_SH" vol create /conformance ctest 10 >>"$RESULTS/curve-cluster.log" 2>&1 \
    || die "curve LU: volume create failed (see $RESULTS/curve-cluster.log)"
}

run_one_lu() {
  local lu=$1 port iqn url out rc=0 start end
  port=$(free_tcp_port)
  iqn="$IQN_BASE-$lu"
  url="iscsi://127.0.0.1:$port/$iqn/1"
  out="$RESULTS/$lu.log"
  if [ "$lu" = delay ]; then export CURVE_TGT_TEST_ENGINES=1; else unset CURVE_TGT_TEST_ENGINES; fi
  LIB_LOG_NAME="tgtd-$lu.log" start_target "$TARGET" "127.0.0.1:$port" "$CTRL"
  case $lu in
    thick)    setup_single_lu "$CTRL" 1 "$iqn" file "$LIB_RUN_DIR/$lu.img" "$LU_SIZE" ;;
    thin)     setup_single_lu "$CTRL" 1 "$iqn" thin "$LIB_RUN_DIR/$lu.img" "$LU_SIZE" ;;
    thin512)  setup_single_lu "$CTRL" 1 "$iqn" thin512 "$LIB_RUN_DIR/$lu.img" "$LU_SIZE" ;;
    readonly) setup_single_lu "$CTRL" 1 "$iqn" readonly "$LIB_RUN_DIR/$lu.img" "$LU_SIZE" ;;
    null)     setup_single_lu "$CTRL" 1 "$iqn" null ;;
    delay)    setup_single_lu "$CTRL" 1 "$iqn" delay - "$LU_SIZE" ;;
    curve|curve512)
      curve_start
      tgt_new_target "$CTRL" 1 "$iqn"
      local bs=()
      [ "$lu" = curve ] || bs=(--blocksize 512)
      tadm "$CTRL" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 --bstype curve \
        --backing-store cbd:pool//conformance_ctest_ --bsopts "mds=$CURVE_MDS" "${bs[@]}"
      tgt_bind_all "$CTRL" 1 ;;
  esac
  tadm "$CTRL" --op show --mode target > "$RESULTS/$lu.show.txt"
  {
    echo "# $(date -u +%FT%TZ) target=$TARGET lu=$lu iscsi-test-cu (libiscsi-bin $(dpkg-query -W -f='${Version}' libiscsi-bin 2>/dev/null || echo '?'))"
    echo "# cmd: iscsi-test-cu --dataloss -i $I1 -I $I2 --test=$CU_TEST $url $url"
  } > "$out"
  log "[$lu] iscsi-test-cu on $url (timeout ${CU_TIMEOUT}s)"
  start=$(date +%s)
  # Same command as ../shared/scripts/run-conformance.sh; the second URL enables MultipathIO.
  timeout -k 10 "$CU_TIMEOUT" stdbuf -oL -eL iscsi-test-cu --dataloss -i "$I1" -I "$I2" \
    --test="$CU_TEST" "$url" "$url" >>"$out" 2>&1 </dev/null &
  local cu_pid=$! size last_size=-1 still_s=0 i
  # Stall watchdog: a target that hangs inside one test (Debian tgt spins forever on GET LBA
  # STATUS against a null LU) would otherwise hold the whole run until CU_TIMEOUT.
  for ((i = 0; i < CU_TIMEOUT + 30; i++)); do
    kill -0 "$cu_pid" 2>/dev/null || break
    size=$(stat -c %s "$out")
    if [ "$size" = "$last_size" ]; then still_s=$((still_s + 1)); else still_s=0; last_size=$size; fi
    if [ "$still_s" -ge "$CU_STALL" ]; then
      log "[$lu] no output for ${CU_STALL}s, stopping iscsi-test-cu; stuck in: $(grep -E '^Suite: |^  Test: ' "$out" | tail -n 2 | tr -s ' \n' ' ')"
      printf '\n# STALLED: no output for %ss\n' "$CU_STALL" >> "$out"
      kill -TERM "$cu_pid" 2>/dev/null || true
      break
    fi
    sleep 1
  done
  wait "$cu_pid" || rc=$?
  end=$(date +%s)
  printf '\n# rc=%s elapsed_s=%s\n' "$rc" "$((end - start))" >> "$out"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    log "[$lu] iscsi-test-cu TIMED OUT after ${CU_TIMEOUT}s; last line: $(grep -v '^#' "$out" | tail -n 1)"
  fi
  log "[$lu] done in $((end - start))s (iscsi-test-cu status $rc)"
  stop_target "$CTRL"
  case $lu in curve|curve512) curve_stop ;; esac
}

for lu in "${LUS[@]}"; do
  run_one_lu "$lu"
done

logs=()
for lu in "${LUS[@]}"; do logs+=("$lu=$RESULTS/$lu.log"); done
rc=0
# The delay LU is expected to do exactly what the file LU does.
awk -F'\t' -v OFS='\t' '{ print } $1 == "thick" { $1 = "delay"; print }' "$EXPECTED" > "$RESULTS/expected.tsv"
EXPECTED=$RESULTS/expected.tsv
"$PYTHON" "$HERE/compare.py" --expected "$EXPECTED" --target "$TARGET" --out "$RESULTS/results.tsv" "${logs[@]}" \
  | tee "$RESULTS/summary.txt" || rc=$?
log "conformance logs: $RESULTS"
exit "$rc"
