#!/usr/bin/env bash
# bench/perio_ab.sh [JOB...]: two builds of ours (ours, base) against one fio job each, run
# interleaved (ours, base, ours, base, ...), with per-I/O counts that load disturbs little:
# the target's io_uring_enter calls, SQEs by opcode (recv, send, sendmsg), CQEs, context
# switches, page faults and CPU time, and the initiator's (fio's) syscalls, all from perf's
# software events and tracepoints over a fixed number of I/Os; plus each run's IOPS and p50,
# of which the report gives the medians.
#   JOB: rw:bs:qd:n, e.g. randwrite:4k:128:200000 (default: the jobs issue 8's A/B flagged)
#   OURS_TGTD/OURS_TGTADM (default target/release), BASE_TGTD/BASE_TGTADM (default the
#   bench-base build of 1f12202 under /work/main), REPS (default 3), TARGET_CPUS (default 0),
#   FIO_CPUS (default 1), OUT (default bench/results/<date>-perio-ab), PERF_RECORD=1 (also a
#   cpu-clock profile of the target per run, raw/*.perf.data, for `perf report`;
#   PERF_RECORD_ARGS replaces its '-F 2999 -e cpu-clock', e.g. '-c 1 -e io_uring:io_uring_complete').
# The null LU only (--bstype null): what is measured is the target's iSCSI and ring path.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../scripts/lib.sh
source "$REPO/scripts/lib.sh"
FIO=${FIO:-/opt/fio-iscsi/fio}
OURS_TGTD=${OURS_TGTD:-$REPO/target/release/tgtd} OURS_TGTADM=${OURS_TGTADM:-$REPO/target/release/tgtadm}
BASE_DIR=${BASE_DIR:-/work/main/target/bench-base/1f1220200e249042861e7ff00239b4eb4933a81d/target/release}
BASE_TGTD=${BASE_TGTD:-$BASE_DIR/tgtd} BASE_TGTADM=${BASE_TGTADM:-$BASE_DIR/tgtadm}
export OURS_TGTD OURS_TGTADM BASE_TGTD BASE_TGTADM
REPS=${REPS:-3} TARGET_CPUS=${TARGET_CPUS:-0} FIO_CPUS=${FIO_CPUS:-1}
OUT=${OUT:-$REPO/bench/results/$(date -u +%Y%m%dT%H%M)-perio-ab}
[ $# -gt 0 ] || set -- randwrite:4k:1:40000 randwrite:4k:32:200000 randwrite:4k:128:200000 \
  read:128k:16:40000 randread:4k:512:200000
mkdir -p "$OUT/raw"
lib_init
IQN=iqn.2026-11.io.curve-tgt:perio-ab
# Target side: io_uring opcodes 27 recv, 26 send, 9 sendmsg, 48 sendmsg_zc (include/uapi/linux/io_uring.h).
TEV=(-e task-clock -e context-switches -e page-faults -e syscalls:sys_enter_io_uring_enter
  -e io_uring:io_uring_submit_req --filter 'opcode == 27'
  -e io_uring:io_uring_submit_req --filter 'opcode == 9 || opcode == 26 || opcode == 48'
  -e io_uring:io_uring_complete -e syscalls:sys_enter_mmap -e syscalls:sys_enter_munmap)
TNAMES=(task_clock_ms cswitch faults enter sqe_recv sqe_send cqe mmap munmap)
FEV=(-e task-clock -e syscalls:sys_enter_read -e syscalls:sys_enter_write -e syscalls:sys_enter_writev
  -e syscalls:sys_enter_poll -e syscalls:sys_enter_recvfrom -e syscalls:sys_enter_sendto)
FNAMES=(fio_task_clock_ms fio_read fio_write fio_writev fio_poll fio_recvfrom fio_sendto)
printf 'kind\trep\tjob\tn\tiops\tp50_us\t%s\t%s\n' "$(IFS=$'\t'; echo "${TNAMES[*]}")" \
  "$(IFS=$'\t'; echo "${FNAMES[*]}")" > "$OUT/runs.tsv"

one_run() { # KIND REP JOB
  local kind=$1 rep=$2 job=$3 rw bs qd n port ctrl pid perfpid tag
  IFS=: read -r rw bs qd n <<< "$job"
  tag="$kind-$rw-$bs-qd$qd-$rep"
  port=$(free_tcp_port); ctrl=$((port + 1))
  start_target "$kind" "127.0.0.1:$port" "$ctrl" "$TARGET_CPUS" --cores "$TARGET_CPUS"
  pid=$LIB_LAST_PID
  setup_single_lu "$ctrl" 1 "$IQN" null
  tgt_set_target_param "$ctrl" 1 MaxQueueCmd 512 || true
  perf stat -x, -o "$OUT/raw/$tag.target.csv" "${TEV[@]}" -p "$pid" & perfpid=$!
  local recpid=''
  [ -z "${PERF_RECORD:-}" ] || { perf record -q ${PERF_RECORD_ARGS:--F 2999 -e cpu-clock} -o "$OUT/raw/$tag.perf.data" -p "$pid" 2>/dev/null & recpid=$!; }
  local url="iscsi://127.0.0.1:$port/$IQN/1"
  perf stat -x, -o "$OUT/raw/$tag.fio.csv" "${FEV[@]}" -- taskset -c "$FIO_CPUS" timeout -k 5 600 \
    "$FIO" --name=ab --ioengine=libiscsi --filename="${url//:/\\:}" \
    --initiator=iqn.2026-11.io.curve-tgt:perio-ab-fio --rw="$rw" --bs="$bs" --iodepth="$qd" \
    --size=1G --number_ios="$n" --randrepeat=1 --output-format=json \
    --output="$OUT/raw/$tag.json" > "$OUT/raw/$tag.log" 2>&1 || log "fio exited $?; see $OUT/raw/$tag.log"
  kill -INT "$perfpid"; wait "$perfpid" || true
  [ -z "$recpid" ] || { kill -INT "$recpid"; wait "$recpid" || true; }
  tadm "$ctrl" --op show --mode target > /dev/null || true
  stop_target "$ctrl"; unset "LIB_TGT_PID[$ctrl]"
  python3 - "$OUT/raw/$tag" "$kind" "$rep" "$job" "$n" >> "$OUT/runs.tsv" <<'PY'
import json, sys
tag, kind, rep, job, n = sys.argv[1:]
j = json.load(open(tag + '.json'))['jobs'][0]
d = j['write'] if j['write']['total_ios'] else j['read']
def counts(path):
    out = []
    for line in open(path):
        f = line.strip().split(',')
        if len(f) < 3 or line.startswith('#'):
            continue
        try:
            out.append(float(f[0]))
        except ValueError:
            out.append(float('nan'))
    return out
row = [kind, rep, job, n, f"{d['iops']:.0f}", f"{d['clat_ns']['percentile']['50.000000']/1000:.1f}"]
row += [f"{v:.0f}" if v == v else 'nan' for v in counts(tag + '.target.csv') + counts(tag + '.fio.csv')]
print('\t'.join(row))
PY
}

for ((r = 1; r <= REPS; r++)); do
  for job in "$@"; do
    for kind in ours base; do
      log "rep $r $kind $job (load $(cut -d' ' -f1 /proc/loadavg))"
      one_run "$kind" "$r" "$job"
    done
  done
done
python3 "$REPO/bench/perio_ab_report.py" "$OUT/runs.tsv" > "$OUT/report.md"
cat "$OUT/report.md"
