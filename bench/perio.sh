#!/usr/bin/env bash
# bench/perio.sh LU RW BS QD N: target CPU, page faults and threads per I/O, from a fixed
# number of I/Os rather than a timed run, so the figures stay comparable on a busy machine.
#   LU: null | file (a 256 MiB file of random bytes in /dev/shm; FSIZE/FCOUNT change it)
#   RW BS QD: fio's rw, bs, iodepth (libiscsi engine); N: fio's number_ios
# Starts our tgtd on one shard (OURS_TGTD/OURS_TGTADM as in scripts/lib.sh; its environment,
# e.g. CURVE_TGT_POLL_US=0 or CURVE_TGT_FILE_INLINE=0, passes through), runs fio once, and
# prints tgtd's utime+stime and minor faults over the run divided by N, each thread's share
# (an `iou-wrk-*` thread is an io_uring worker doing I/O the shard handed off), fio's IOPS,
# and the LU's in-target latency table (tgtadm --op stat). Login is included in the counts;
# use N large enough (20000 for 4 KiB) that it does not matter. CPU ticks are 10 ms.
set -euo pipefail
[ $# -eq 5 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
LU=$1 RW=$2 BS=$3 QD=$4 N=$5
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../scripts/lib.sh
source "$REPO/scripts/lib.sh"
lib_init
FIO=${FIO:-/opt/fio-iscsi/fio}
FSIZE=${FSIZE:-256M} FCOUNT=${FCOUNT:-256}
IQN=iqn.2026-11.io.curve-tgt:perio
port=$(free_tcp_port); ctrl=$((port + 1))
start_target ours "127.0.0.1:$port" "$ctrl" "" --cores 1
pid=$LIB_LAST_PID
case $LU in
  null) setup_single_lu "$ctrl" 1 "$IQN" null ;;
  file) f=$LIB_RUN_DIR/perio.img
        dd if=/dev/urandom of="$f" bs=1M count="$FCOUNT" status=none
        truncate -s "$FSIZE" "$f"
        setup_single_lu "$ctrl" 1 "$IQN" file "$f" ;;
  *) die "LU must be null or file" ;;
esac
tgt_set_target_param "$ctrl" 1 MaxQueueCmd 512 || true
snap() { awk '{print $10, $14, $15}' "/proc/$pid/stat"; }   # minflt utime stime
read -r f0 u0 s0 < <(snap)
url="iscsi://127.0.0.1:$port/$IQN/1"
timeout -k 5 600 "$FIO" --name=perio --ioengine=libiscsi --filename="${url//:/\\:}" \
  --initiator=iqn.2026-11.io.curve-tgt:perio-fio --rw="$RW" --bs="$BS" --iodepth="$QD" \
  --size="$FSIZE" --number_ios="$N" --randrepeat=1 --output-format=json \
  --output="$LIB_RUN_DIR/fio.json" > "$LIB_RUN_DIR/fio.log" 2>&1 || log "fio exited $?; see $LIB_RUN_DIR/fio.log"
read -r f1 u1 s1 < <(snap)
echo "== $LU $RW $BS qd$QD n=$N"
awk -v n="$N" -v f="$((f1 - f0))" -v u="$((u1 - u0))" -v s="$((s1 - s0))" 'BEGIN {
  printf "minflt %d (%.3f per I/O); utime %d stime %d ticks; target CPU %.2f us per I/O\n",
    f, f / n, u, s, (u + s) * 10000 / n }'
for t in "/proc/$pid/task"/*; do
  printf '  %s utime %s stime %s\n' "$(cat "$t/comm")" "$(awk '{print $(NF-38)}' "$t/stat")" "$(awk '{print $(NF-37)}' "$t/stat")"
done
python3 - "$LIB_RUN_DIR/fio.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))['jobs'][0]
for k in ('read', 'write'):
    d = j[k]
    if d['total_ios']:
        p = d['clat_ns']['percentile']
        print(f"fio {k}: {d['total_ios']} I/Os, {d['iops']:.0f} IOPS, p50 {p['50.000000']/1000:.1f} us")
PY
tadm "$ctrl" --lld iscsi --op stat --mode logicalunit --tid 1 --lun 1 | tail -3
