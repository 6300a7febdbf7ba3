#!/usr/bin/env bash
# Zero-copy send shapes, per I/O (issue 10): our tgtd with zero-copy forced on
# (CURVE_TGT_ZEROCOPY_FORCE=1) in batch mode, payload-only mode with registered buffers, and
# payload-only without them, against sequential reads of a fixed number of I/Os; perf counts
# the target's io_uring_enter calls, send SQEs by kind (copy: SEND/SENDMSG; zero-copy:
# SEND_ZC/SENDMSG_ZC) and CQEs (notifications included), which load disturbs little, and its
# task-clock (rough on a shared machine). The report gives each per I/O, with MiB/s.
#
#   bench/zerocopy_counts.sh [options]
#     --jobs "LIST"   rw:bs:qd:size (default "read:1m:4:1G read:128k:16:1G"); I/Os = size / bs
#     --modes "LIST"  of batch, payload, payload-nofixed (default all three)
#     --lu null|file  backing (default file: a /dev/shm file of the largest size)
#     --reps N        repeat every job N times, modes interleaved (default 2)
#     --out DIR       results (default bench/results/zerocopy-counts-<UTC timestamp>)
# Loopback copies every zero-copy send anyway (tuning.md): this shows what each mode costs in
# ring traffic and what registered buffers save in pinning, not what a NIC would gain.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../scripts/lib.sh
source "$REPO/scripts/lib.sh"
FIO=${FIO:-/opt/fio-iscsi/fio}
JOBS="read:1m:4:1G read:128k:16:1G" MODES="batch payload payload-nofixed" LU=file REPS=2 OUT=''
while [ $# -gt 0 ]; do
  case $1 in
    --jobs) JOBS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --lu) LU=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
OUT=${OUT:-$REPO/bench/results/zerocopy-counts-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/raw"
lib_init
IQN=iqn.2026-11.io.curve-tgt:zc-counts
BACKING=$LIB_RUN_DIR/zc-counts.img
if [ "$LU" = file ]; then
  max=$(for j in $JOBS; do echo "${j##*:}"; done | numfmt --from=iec | sort -n | tail -n 1)
  make_backing_file "$BACKING" "$max" thick
fi
# io_uring opcodes (include/uapi/linux/io_uring.h): 9 SENDMSG, 26 SEND, 47 SEND_ZC, 48 SENDMSG_ZC.
TEV=(-e task-clock -e syscalls:sys_enter_io_uring_enter
  -e io_uring:io_uring_submit_req --filter 'opcode == 9 || opcode == 26'
  -e io_uring:io_uring_submit_req --filter 'opcode == 47 || opcode == 48'
  -e io_uring:io_uring_complete)
{
  printf 'date_utc\t%s\nkernel\t%s\nloadavg_start\t%s\nours\tgit %s\nlu\t%s\n' "$(date -u +%FT%TZ)" \
    "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(git -C "$REPO" rev-parse --short HEAD)" "$LU"
} > "$OUT/meta.tsv"
printf 'rep\tmode\tjob\tios\ttask_ms\tenter\tsqe_copy\tsqe_zc\tcqe\tbw_bytes\n' > "$OUT/runs.tsv"
for ((rep = 1; rep <= REPS; rep++)); do
  for job in $JOBS; do
    IFS=: read -r rw bs qd size <<< "$job"
    ios=$(( $(numfmt --from=iec "$size") / $(numfmt --from=iec "${bs^^}") ))
    for mode in $MODES; do
      args=(--cores 0)
      case $mode in
        batch) ;;
        payload) args+=(--zerocopy-payload-only 1) ;;
        payload-nofixed) args+=(--zerocopy-payload-only 1 --zerocopy-fixed-buffers 0) ;;
        *) die "unknown mode '$mode'" ;;
      esac
      port=$(free_tcp_port); ctrl=$((port + 1)); tag=$mode-$rw-$bs-qd$qd-$rep
      export CURVE_TGT_ZEROCOPY_FORCE=1
      LIB_LOG_NAME="tgtd-$tag.log" start_target ours "127.0.0.1:$port" "$ctrl" 0 "${args[@]}"
      unset CURVE_TGT_ZEROCOPY_FORCE
      pid=$LIB_LAST_PID
      if [ "$LU" = file ]; then setup_single_lu "$ctrl" 1 "$IQN" file "$BACKING"; else setup_single_lu "$ctrl" 1 "$IQN" null; fi
      perf stat -x, -o "$OUT/raw/$tag.perf.csv" "${TEV[@]}" -p "$pid" & perfpid=$!
      url="iscsi://127.0.0.1:$port/$IQN/1"
      taskset -c 1 timeout -k 5 300 "$FIO" --name=zc --ioengine=libiscsi --filename="${url//:/\\:}" \
        --initiator=iqn.2026-11.io.curve-tgt:zc-counts-fio --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --size="$size" --output-format=json --output="$OUT/raw/$tag.json" > "$OUT/raw/$tag.log" 2>&1 \
        || log "fio exited $?; see $OUT/raw/$tag.log"
      kill -INT "$perfpid"; wait "$perfpid" || true
      tadm "$ctrl" --lld iscsi --op stat --mode sys > "$OUT/raw/$tag.stat.txt" 2>&1 || true
      stop_target "$ctrl"
      vals=$(awk -F, '$3 != "" {printf "%s\t", $1}' "$OUT/raw/$tag.perf.csv")
      bw=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["read"]["bw_bytes"])' "$OUT/raw/$tag.json" 2>/dev/null || echo 0)
      printf '%s\t%s\t%s\t%s\t%s%s\n' "$rep" "$mode" "$rw-$bs-qd$qd" "$ios" "$vals" "$bw" >> "$OUT/runs.tsv"
    done
  done
done
"$PYTHON" - "$OUT" <<'PY'
import csv, os, sys, statistics
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "runs.tsv")), delimiter="\t"))
lines = ["# Zero-copy send shapes per I/O (forced zero-copy, loopback)", ""]
lines += [l.rstrip("\n").replace("\t", ": ", 1) + "  " for l in open(os.path.join(out, "meta.tsv"))]
lines += ["", "Medians over the reps. Counts per I/O are what load disturbs little; task-clock "
          "(target CPU ms per I/O) and MiB/s are rough on a shared machine.", "",
          "| job | mode | enter/IO | copy SQE/IO | zc SQE/IO | CQE/IO | CPU ms/IO | MiB/s |",
          "|---|---|---|---|---|---|---|---|"]
for job in dict.fromkeys(r["job"] for r in rows):
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = [r for r in rows if r["job"] == job and r["mode"] == mode]
        if not rs:
            continue
        per = lambda k: statistics.median(float(r[k]) / float(r["ios"]) for r in rs)
        bw = statistics.median(float(r["bw_bytes"]) for r in rs) / 2**20
        lines.append(f"| {job} | {mode} | {per('enter'):.2f} | {per('sqe_copy'):.2f} | "
                     f"{per('sqe_zc'):.2f} | {per('cqe'):.2f} | {per('task_ms'):.4f} | {bw:.0f} |")
lines.append("")
open(os.path.join(out, "report.md"), "w").write("\n".join(lines))
print("\n".join(lines))
PY
log "report: $OUT/report.md"
