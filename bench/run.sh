#!/usr/bin/env bash
# Side-by-side benchmark: Debian's tgtd and ours, same LUs, same CPU pinning, one run.
# See bench/README.md for how to read the output.
#
#   bench/run.sh [options]
#     --duration S        fio runtime per job (default 20)
#     --ramp S            fio ramp_time per job (default 2)
#     --target-cpus LIST  CPUs both targets are pinned to (taskset; ours also gets --cores) (default 0)
#     --fio-cpus LIST     CPUs fio and the iperf3 client are pinned to (default 1)
#     --lus "LIST"        LU kinds: null rdwr aio curve (default "null rdwr aio"; aio runs on tgt
#                         only, curve on ours only: a 10 GiB volume of a private CurveBS cluster
#                         that this script starts and stops, its first CURVE_BENCH_SPAN (1G)
#                         written with Curve's own client first so reads reach the chunk servers)
#     --jobs REGEX        only jobs whose name matches (default: all; see JOBS below)
#     --file-size SIZE    size of the /dev/shm backing file (default 1G)
#     --no-iperf          skip the loopback TCP baseline
#     --out DIR           results directory (default bench/results/<UTC timestamp>)
#     --reps N            run every job N times per target, interleaved (ours, base, base, ours,
#                         ...); the report gives medians, and ours/base as the median of the
#                         N paired ratios with their range (default 1)
#     --scaling           many-core mode: ours only, N fio sessions against --cores 1,2,4,8
#   Environment: OURS=skip or TGT=skip leaves one target out (e.g. OURS=skip while our tgtd
#   cannot serve I/O yet); FIO=/opt/fio-iscsi/fio; OURS_TGTD/OURS_TGTADM/TGT_TGTD/TGT_TGTADM
#   as in scripts/lib.sh; SCALING_CORES="1 2 4 8"; SCALING_SESSIONS_PER_CORE=2;
#   CURVE_CLUSTER_SH (default ../shared/curve/cluster.sh), CURVE_BENCH_SPAN=1G (fio's --size
#   on the curve LU), CURVE_TMP (where the cluster keeps its data; default $TMPDIR or /tmp);
#   SCALING_TARGET=tgt runs --scaling against Debian's tgtd (single-threaded: a plumbing check).
#   BENCH_PERF=1 records `perf record -g` of our tgtd during each of its jobs into
#   perf/<target>-<lu>-<job>.data (its own CPU then counts in the target's figures a little).
#   OURS_BASE=<git rev> adds a third target, "base": that revision of ours, built (release)
#   from `git archive` into OURS_BASE_DIR (default target/bench-base/<rev>, reused when built
#   already), run exactly like ours (same --cores, same LUs); report.md then has an
#   "ours / base" table that flags jobs more than 5% worse. TGT=skip OURS_BASE=main runs an
#   A/B of two builds of ours only.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

DURATION=20 RAMP=2 TARGET_CPUS=0 FIO_CPUS=1 LUS="null rdwr aio" JOB_RE=. FILE_SIZE=1G IPERF=1
OUT='' SCALING=0 REPS=1
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --ramp) RAMP=$2; shift 2 ;;
    --target-cpus) TARGET_CPUS=$2; shift 2 ;;
    --fio-cpus) FIO_CPUS=$2; shift 2 ;;
    --lus) LUS=$2; shift 2 ;;
    --jobs) JOB_RE=$2; shift 2 ;;
    --file-size) FILE_SIZE=$2; shift 2 ;;
    --no-iperf) IPERF=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    --scaling) SCALING=1; shift ;;
    --reps) REPS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ $REPS =~ ^[1-9][0-9]?$ ]] || die "--reps wants a count from 1 to 99, not '$REPS'"
FIO=${FIO:-/opt/fio-iscsi/fio}
OURS=${OURS:-run} TGT=${TGT:-run} OURS_BASE=${OURS_BASE:-}
OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}
if ! { [ -x "$FIO" ] && "$FIO" --enghelp 2>/dev/null | grep -qw libiscsi; }; then
  die "$FIO with the libiscsi engine is missing: run 'bash scripts/install-deps.sh --bench'"
fi
command -v ss >/dev/null || die "ss missing: apt-get install -y iproute2"
[ "$IPERF" = 0 ] || command -v iperf3 >/dev/null || die "iperf3 missing: run 'bash scripts/install-deps.sh --bench'"

# Job list: name rw bs iodepth.
JOBS=(
  "randread-4k-qd1 randread 4k 1"     "randwrite-4k-qd1 randwrite 4k 1"
  "randread-4k-qd32 randread 4k 32"   "randwrite-4k-qd32 randwrite 4k 32"
  "randread-4k-qd128 randread 4k 128" "randwrite-4k-qd128 randwrite 4k 128"
  "randread-4k-qd512 randread 4k 512" "randwrite-4k-qd512 randwrite 4k 512"
  "read-128k-qd16 read 128k 16"       "write-128k-qd16 write 128k 16"
  "read-1m-qd4 read 1m 4"
)

mkdir -p "$OUT/fio" "$OUT/meta" "$OUT/tcp"
export LIB_LOG_DIR=$OUT/meta
lib_init
declare -A PORT=() CTRL=([ours]=51 [tgt]=52 [base]=53) LU_TID=() LU_ARGS=()
IQN_BASE=iqn.2026-11.io.curve-tgt:bench
HZ=$(getconf CLK_TCK)

now_s() { date +%s.%N; }
meta() { printf '%s\t%s\n' "$1" "$2" >> "$OUT/meta/meta.tsv"; }
fio_url() { local u="iscsi://127.0.0.1:$1/$2/1"; echo "${u//:/\\:}"; }   # fio splits names on ':'

record_machine() {
  : > "$OUT/meta/meta.tsv"
  meta date_utc "$(date -u +%FT%TZ)"
  meta host "$(hostname)"
  meta cpu_model "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)"
  meta cpus_online "$(nproc)"
  meta mem_total "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  meta kernel "$(uname -r)"
  meta os "$(. /etc/os-release && echo "$PRETTY_NAME")"
  meta fio "$("$FIO" --version)"
  meta libiscsi "$(dpkg-query -W -f='${Version}' libiscsi7 2>/dev/null || echo '?')"
  meta iperf3 "$(iperf3 --version 2>/dev/null | head -n 1 || echo '-')"
  meta tgt_version "$("$TGT_TGTD" -V 2>/dev/null || echo '?') ($(dpkg-query -W -f='${Version}' tgt 2>/dev/null || echo '?'))"
  meta ours_version "$("$OURS_TGTD" -V 2>/dev/null || echo '?') (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  [ -z "$OURS_BASE" ] || meta base_version "$("$BASE_TGTD" -V 2>/dev/null || echo '?') (git $OURS_BASE = $BASE_REV)"
  meta duration_s "$DURATION"
  meta ramp_s "$RAMP"
  meta target_cpus "$TARGET_CPUS"
  meta fio_cpus "$FIO_CPUS"
  meta file_size "$FILE_SIZE"
  meta backing_file "$BACKING"
  meta governor "$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)"
  sysctl -n net.core.optmem_max >/dev/null 2>&1 && meta optmem_max "$(sysctl -n net.core.optmem_max)"
}

# start_bench_target KIND: one target per LU kind (tid 1 null, 2 rdwr, 3 aio), MaxQueueCmd 512
# so queue depths up to 512 reach the target (tgt's default window is 128).
start_bench_target() {
  local kind=$1 tid=0 lu extra=()
  PORT[$kind]=$(free_tcp_port)
  is_ours "$kind" && extra=(--cores "$TARGET_CPUS")
  LIB_LOG_NAME="tgtd-$kind.log" start_target "$kind" "127.0.0.1:${PORT[$kind]}" "${CTRL[$kind]}" "$TARGET_CPUS" "${extra[@]}"
  for lu in $LUS; do
    tid=$((tid + 1))
    lu_runs_on "$lu" "$kind" || continue
    case $lu in
      null) LU_ARGS[$lu]=null ;;
      rdwr) LU_ARGS[$lu]="file $BACKING" ;;
      aio)  LU_ARGS[$lu]="aio $BACKING" ;;
      curve) LU_ARGS[$lu]=curve ;;
      *) die "unknown LU kind '$lu' (null rdwr aio curve)" ;;
    esac
    LU_TID[$lu]=$tid
    tgt_new_target "${CTRL[$kind]}" "$tid" "$IQN_BASE-$lu"
    bench_add_lu "$kind" "$tid" "$lu"
    tgt_bind_all "${CTRL[$kind]}" "$tid"
    tgt_set_target_param "${CTRL[$kind]}" "$tid" MaxQueueCmd 512 \
      || { is_ours "$kind" && log "warning: our tgtd ($kind) refused MaxQueueCmd=512"; }
    tadm "${CTRL[$kind]}" --op show --mode target --tid "$tid" > "$OUT/meta/params-$kind-$lu.txt" || true
  done
  tadm "${CTRL[$kind]}" --op show --mode target > "$OUT/meta/show-$kind.txt" || true
}

is_ours() { [ "$1" = ours ] || [ "$1" = base ]; }   # KIND: a build of this repository

# build_base: builds OURS_BASE (a git revision) into its own directory, once.
build_base() {
  BASE_REV=$(git -C "$REPO" rev-parse --verify "$OURS_BASE^{commit}") || die "OURS_BASE=$OURS_BASE is not a revision"
  local dir=${OURS_BASE_DIR:-$REPO/target/bench-base/$BASE_REV}
  BASE_TGTD=$dir/target/release/tgtd BASE_TGTADM=$dir/target/release/tgtadm
  if [ ! -x "$BASE_TGTD" ] || [ ! -x "$BASE_TGTADM" ]; then
    log "building base $OURS_BASE ($BASE_REV) in $dir"
    rm -rf -- "$dir/src"; mkdir -p "$dir/src"
    git -C "$REPO" archive "$BASE_REV" | tar -x -C "$dir/src"
    cargo build --release --manifest-path "$dir/src/Cargo.toml" --target-dir "$dir/target" \
      --bin tgtd --bin tgtadm > "$dir/build.log" 2>&1 || die "base build failed; see $dir/build.log"
  fi
  export BASE_TGTD BASE_TGTADM
}

lu_runs_on() { # LU KIND: aio is tgt's libaio store; ours serves every file LU through io_uring.
  case $1 in
    aio) [ "$2" = tgt ] || [ -n "${OURS_AIO:-}" ] ;;
    curve) is_ours "$2" ;;   # Debian's tgt has no Curve store
    *) true ;;
  esac
}

# bench_add_lu KIND TID LU: LUN 1 of TID for LU kind LU.
bench_add_lu() {
  local kind=$1 tid=$2 lu=$3
  if [ "$lu" = curve ]; then
    tadm "${CTRL[$kind]}" --lld iscsi --op new --mode logicalunit --tid "$tid" --lun 1 \
      --bstype curve --backing-store cbd:pool//bench_ctest_ --bsopts "mds=$CURVE_MDS"
  else
    # shellcheck disable=SC2086 # LU_ARGS is "type [path]"
    tgt_add_lu "${CTRL[$kind]}" "$tid" 1 ${LU_ARGS[$lu]}
  fi
}

# The curve LU's cluster: on free loopback ports, on disk, stopped before the run dir goes.
CURVE_CLUSTER_SH=${CURVE_CLUSTER_SH:-$REPO/../shared/curve/cluster.sh}
CURVE_UP='' CURVE_MDS=''
curve_stop() {
  [ -n "$CURVE_UP" ] || return 0
  bash "$CURVE_CLUSTER_SH" stop >>"$OUT/meta/curve-cluster.log" 2>&1 || true
  rm -rf -- "$CURVE_RUN"
  CURVE_UP=''
}
curve_start() {
  local base i p ok=0
  [ -f "$CURVE_CLUSTER_SH" ] || die "curve LU: no Curve cluster kit at $CURVE_CLUSTER_SH"
  for ((i = 0; i < 200 && ok == 0; i++)); do
    base=$(( 20000 + RANDOM % 12000 )); ok=1
    for ((p = base; p < base + 8; p++)); do port_is_listening "$p" && { ok=0; break; }; done
  done
  [ "$ok" = 1 ] || die "curve LU: no 8 consecutive free ports"
  CURVE_RUN=$(mktemp -d "${CURVE_TMP:-${TMPDIR:-/tmp}}/curve-bench.XXXXXX")
  export CURVE_RUN CURVE_ETCD_PORT=$base CURVE_MDS_PORT=$((base + 3)) CURVE_CS_PORT=$((base + 5))
  CURVE_MDS=127.0.0.1:$CURVE_MDS_PORT
  CURVE_UP=1
  log "curve: starting a CurveBS cluster (MDS $CURVE_MDS, CURVE_RUN=$CURVE_RUN)"
  # Curve's chunk server now and then aborts while starting (glibc "unaligned tcache chunk"):
  # one more try from scratch before giving up.
  if ! bash "$CURVE_CLUSTER_SH" start >>"$OUT/meta/curve-cluster.log" 2>&1; then
    log "curve: cluster start failed; retrying once (see $OUT/meta/curve-cluster.log)"
    bash "$CURVE_CLUSTER_SH" stop >>"$OUT/meta/curve-cluster.log" 2>&1 || true
    rm -rf -- "${CURVE_RUN:?}"/*
    bash "$CURVE_CLUSTER_SH" start >>"$OUT/meta/curve-cluster.log" 2>&1 || die "curve: cluster start failed twice (see $OUT/meta/curve-cluster.log)"
  fi
  bash "$CURVE_CLUSTER_SH" vol create /bench ctest 10 >>"$OUT/meta/curve-cluster.log" 2>&1 || die "curve: vol create failed"
  log "curve: writing the first $CURVE_BENCH_SPAN with Curve's client"
  bash "$CURVE_CLUSTER_SH" vol write /bench ctest 0 "$(numfmt --from=iec "$CURVE_BENCH_SPAN")" 1 \
    >>"$OUT/meta/curve-cluster.log" 2>&1 || die "curve: prefill failed"
}
CURVE_BENCH_SPAN=${CURVE_BENCH_SPAN:-1G}

# ctxt_switches PID: voluntary + involuntary context switches of all of PID's live threads
# (/proc/PID/status counts only the thread it names, so sum /proc/PID/task/*/status).
ctxt_switches() {
  cat "/proc/$1/task"/*/status 2>/dev/null \
    | awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {n += $2} END {print n + 0}'
}

# curve_cluster_ticks: CPU ticks (utime+stime) of the cluster's chunk servers, then of its MDS
# and etcd: what Curve itself spends, beside what our target spends. "0 0" without a cluster.
curve_cluster_ticks() {
  local cs=0 other=0 n pid t
  if [ -n "$CURVE_UP" ]; then
    for n in cs0 cs1 cs2 mds etcd; do
      pid=$(cat "$CURVE_RUN/pids/$n.pid" 2>/dev/null) || continue
      t=$(proc_cpu_ticks "$pid" 2>/dev/null) || continue
      case $n in cs*) cs=$((cs + t)) ;; *) other=$((other + t)) ;; esac
    done
  fi
  echo "$cs $other"
}

# run_fio KIND LU NAME RW BS QD [EXTRA FIO ARGS]: one fio run, plus the target's CPU time and
# context switches, the Curve cluster's CPU time (curve LU) and the load average before it;
# appends a row to runs.tsv.
run_fio() {
  local kind=$1 lu=$2 name=$3 rw=$4 bs=$5 qd=$6; shift 6
  local pid=${LIB_TGT_PID[${CTRL[$kind]}]} json="fio/$kind-$lu-$name${REP_TAG:-}.json" rc=0
  local load c0 c1 t0 t1 x0 x1 k0 k1
  kill -0 "$pid" 2>/dev/null || die "$kind tgtd (PID $pid) is gone; see $OUT/meta/tgtd-$kind.log"
  # Ours keeps per-LU latency histograms from the LU's creation (tgtadm --op stat): a fresh
  # LU before each job makes them this job's (ramp included). No session is logged in here.
  if is_ours "$kind" && [ -n "${LU_TID[$lu]:-}" ]; then
    tadm "${CTRL[$kind]}" --lld iscsi --op delete --mode logicalunit --tid "${LU_TID[$lu]}" --lun 1
    bench_add_lu "$kind" "${LU_TID[$lu]}" "$lu"
  fi
  # The curve LU: only the span written beforehand (unallocated space reads as zeros locally).
  [ "$lu" != curve ] || set -- "$@" --size="$CURVE_BENCH_SPAN"
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "$kind $lu $name${REP_TAG:-} (load $load)"
  local perf_pid=''
  if [ -n "${BENCH_PERF:-}" ] && is_ours "$kind"; then
    mkdir -p "$OUT/perf"
    perf record -q -g -p "$pid" -o "$OUT/perf/$kind-$lu-$name.data" > "$OUT/perf/$kind-$lu-$name.log" 2>&1 &
    perf_pid=$!
  fi
  k0=$(curve_cluster_ticks); x0=$(ctxt_switches "$pid"); c0=$(proc_cpu_ticks "$pid"); t0=$(now_s)
  timeout -k 5 $((DURATION + RAMP + 60)) taskset -c "$FIO_CPUS" "$FIO" --name="$name" \
    --ioengine=libiscsi --filename="$(fio_url "${PORT[$kind]}" "$IQN_BASE-$lu")" \
    --initiator=iqn.2026-11.io.curve-tgt:bench-fio \
    --rw="$rw" --bs="$bs" --iodepth="$qd" --time_based=1 --runtime="$DURATION" --ramp_time="$RAMP" \
    "$@" --output-format=json --output="$OUT/$json" > "$OUT/$json.log" 2>&1 || rc=$?
  c1=$(proc_cpu_ticks "$pid"); t1=$(now_s); x1=$(ctxt_switches "$pid"); k1=$(curve_cluster_ticks)
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; fi
  if is_ours "$kind" && [ -n "${LU_TID[$lu]:-}" ]; then
    tadm "${CTRL[$kind]}" --lld iscsi --op stat --mode logicalunit --tid "${LU_TID[$lu]}" --lun 1 \
      > "$OUT/${json%.json}.stat.txt" 2>&1 || log "warning: tgtadm --op stat failed for $lu"
  fi
  [ "$rc" = 0 ] || log "warning: fio exited $rc for $kind $lu $name; see $OUT/$json.log"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$lu" "$name" "$rw" "$bs" "$qd" "$rc" \
    "$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz}')" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')" "$load" "$json" "$((x1 - x0))" \
    "$(awk -v a="$k0" -v b="$k1" -v hz="$HZ" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.2f\t%.2f", (y[1] - x[1]) / hz, (y[2] - x[2]) / hz}')" \
    "${REP:-1}" >> "$OUT/runs.tsv"
}

# iperf_run NAME LEN SENDER_CPUS RECEIVER_CPUS: single-stream loopback TCP with LEN-byte
# writes. The sender is the iperf3 client, so no reverse mode is needed: "send" pins the sender
# like the targets (the direction of iSCSI read data), "recv" pins it like fio (write data).
iperf_run() {
  local name=$1 len=$2 snd=$3 rcv=$4 port spid i secs=$(( DURATION < 10 ? DURATION : 10 ))
  port=$(free_tcp_port)
  taskset -c "$rcv" iperf3 -s -1 -B 127.0.0.1 -p "$port" > "$OUT/tcp/$name.server.log" 2>&1 &
  spid=$!
  for ((i = 0; i < 50; i++)); do port_is_listening "$port" && break; sleep 0.1; done
  timeout -k 5 $((secs + 30)) taskset -c "$snd" iperf3 -c 127.0.0.1 -p "$port" -l "$len" -t "$secs" -J \
    > "$OUT/tcp/$name.json" 2>"$OUT/tcp/$name.err" || log "warning: iperf3 $name failed"
  for ((i = 0; i < 50; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
}

main_compare() {
  local kinds=() kind lu i j order
  [ "$TGT" = skip ] || kinds+=(tgt)
  [ "$OURS" = skip ] || kinds+=(ours)
  [ -z "$OURS_BASE" ] || { build_base; kinds+=(base); }
  [ ${#kinds[@]} -gt 0 ] || die "both OURS=skip and TGT=skip: nothing to run"
  record_machine
  meta mode compare
  meta targets "${kinds[*]}"
  meta lus "$LUS"
  meta reps "$REPS"
  if [[ " $LUS " == *" rdwr "* || " $LUS " == *" aio "* ]]; then
    log "backing file $BACKING ($FILE_SIZE, allocated)"
    make_backing_file "$BACKING" "$FILE_SIZE" thick
  fi
  if [[ " $LUS " == *" curve "* ]]; then
    trap 'curve_stop; lib_cleanup' EXIT
    curve_start
  fi
  for kind in "${kinds[@]}"; do start_bench_target "$kind"; done
  printf 'target\tlu\tjob\trw\tbs\tiodepth\tfio_rc\ttarget_cpu_s\twall_s\tloadavg1_before\tfio_json\ttarget_ctxt_switches\tcluster_cs_cpu_s\tcluster_other_cpu_s\trep\n' > "$OUT/runs.tsv"

  # Alternate the targets job by job and repetition by repetition (and swap who goes first
  # every other time), so drift in the machine's state (other load, page cache, thermal) falls
  # on all alike and each pair of runs being compared ran back to back.
  i=0
  for lu in $LUS; do
    for j in "${JOBS[@]}"; do
      read -r name rw bs qd <<<"$j"
      [[ $name =~ $JOB_RE ]] || continue
      for ((REP = 1; REP <= REPS; REP++)); do
        if ((REPS > 1)); then REP_TAG=-r$REP; else REP_TAG=''; fi
        if ((i % 2 == 0)); then order=("${kinds[@]}"); else order=(); for ((k = ${#kinds[@]} - 1; k >= 0; k--)); do order+=("${kinds[k]}"); done; fi
        for kind in "${order[@]}"; do
          lu_runs_on "$lu" "$kind" || continue
          run_fio "$kind" "$lu" "$name" "$rw" "$bs" "$qd"
        done
        i=$((i + 1))
      done
    done
  done
  REP=1 REP_TAG=''
  for kind in "${kinds[@]}"; do stop_target "${CTRL[$kind]}"; done
  curve_stop

  if [ "$IPERF" = 1 ]; then
    log "loopback TCP baseline (iperf3 -l 128K and 1M, both directions between CPUs $TARGET_CPUS and $FIO_CPUS)"
    iperf_run send-128k 128K "$TARGET_CPUS" "$FIO_CPUS"
    iperf_run send-1m 1M "$TARGET_CPUS" "$FIO_CPUS"
    iperf_run recv-128k 128K "$FIO_CPUS" "$TARGET_CPUS"
    iperf_run recv-1m 1M "$FIO_CPUS" "$TARGET_CPUS"
  fi
}

# Many-core mode: our tgtd only, with --cores 1,2,4,8 (as the machine allows); fio runs
# SCALING_SESSIONS_PER_CORE sessions per target core, one process (and iSCSI session) each, on
# the CPUs the target does not use.
main_scaling() {
  local ncpu n cores fio_cpus sessions kind=${SCALING_TARGET:-ours}
  ncpu=$(nproc)
  record_machine
  meta mode scaling
  meta targets "$kind"
  meta lus null
  printf 'target\tlu\tjob\trw\tbs\tiodepth\tfio_rc\ttarget_cpu_s\twall_s\tloadavg1_before\tfio_json\ttarget_ctxt_switches\tcluster_cs_cpu_s\tcluster_other_cpu_s\trep\n' > "$OUT/runs.tsv"
  for n in ${SCALING_CORES:-1 2 4 8}; do
    if ((n + 1 > ncpu)); then log "scaling: skipping --cores $n: needs $((n + 1)) CPUs, have $ncpu"; continue; fi
    cores=$(seq -s, 0 $((n - 1)))
    fio_cpus="$n-$((ncpu - 1))"
    sessions=$((n * ${SCALING_SESSIONS_PER_CORE:-2}))
    TARGET_CPUS=$cores FIO_CPUS=$fio_cpus LUS=null start_bench_target "$kind"
    TARGET_CPUS=$cores FIO_CPUS=$fio_cpus run_fio "$kind" null "scale-cores$n-s$sessions" randread 4k 32 \
      --numjobs="$sessions" --group_reporting=1
    stop_target "${CTRL[$kind]}"
  done
}

# The run directory (sockets, backing file) is on /dev/shm when there is one; see lib_init.
BACKING=${BACKING:-$LIB_RUN_DIR/bench.img}
log "results: $OUT"
if [ "$SCALING" = 1 ]; then
  [ "$OURS" != skip ] || [ "${SCALING_TARGET:-ours}" != ours ] || die "--scaling measures our tgtd; unset OURS=skip"
  main_scaling
else
  main_compare
fi
"$PYTHON" "$HERE/report.py" "$OUT"
log "report: $OUT/report.md"
