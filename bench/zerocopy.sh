#!/usr/bin/env bash
# Zero-copy Data-In benchmark (issue 10): our tgtd with zero-copy off, auto and forced on,
# for each engine, in ONE run, alternating modes job by job; sequential reads of 128 KiB
# (iodepth 16) and 1 MiB (iodepth 4) through fio's libiscsi engine. Reports bandwidth and
# target CPU seconds per GB as ratios against copy mode (off).
#
#   bench/zerocopy.sh [options]
#     --duration S        fio runtime per job (default 10)
#     --ramp S            fio ramp_time per job (default 2)
#     --target-cpus LIST  CPUs the targets are pinned to (taskset and --cores) (default 0)
#     --fio-cpus LIST     CPUs fio is pinned to (default 1)
#     --modes "LIST"      of off, auto:ENGINE, on:ENGINE (default "off auto:uring on:uring auto:msg on:msg")
#     --file-size SIZE    the /dev/shm backing file (default 1G)
#     --out DIR           results directory (default bench/results/zerocopy-<UTC timestamp>)
#
# "on" is CURVE_TGT_ZEROCOPY_FORCE=1: zero-copy kept even when the kernel reports copying.
# On loopback the kernel always copies (skb_orphan_frags_rx), so "on" pays twice and "auto"
# must step aside (within a few % of "off"); the gain needs a real NIC (see tuning.md).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

DURATION=10 RAMP=2 TARGET_CPUS=0 FIO_CPUS=1 FILE_SIZE=1G OUT=''
MODES="off auto:uring on:uring auto:msg on:msg"
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --ramp) RAMP=$2; shift 2 ;;
    --target-cpus) TARGET_CPUS=$2; shift 2 ;;
    --fio-cpus) FIO_CPUS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --file-size) FILE_SIZE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
FIO=${FIO:-/opt/fio-iscsi/fio}
OUT=${OUT:-$HERE/results/zerocopy-$(date -u +%Y%m%dT%H%M%SZ)}
"$FIO" --enghelp 2>/dev/null | grep -qw libiscsi \
  || die "$FIO with the libiscsi engine is missing: run 'bash scripts/install-deps.sh --bench'"
JOBS=("read-128k-qd16 read 128k 16" "read-1m-qd4 read 1m 4")

mkdir -p "$OUT/fio" "$OUT/meta"
export LIB_LOG_DIR=$OUT/meta
lib_init
IQN=iqn.2026-11.io.curve-tgt:zc
HZ=$(getconf CLK_TCK)
BACKING=${BACKING:-$LIB_RUN_DIR/zc.img}
declare -A PORT=() CTRL=() PID=()

{
  printf 'date_utc\t%s\n' "$(date -u +%FT%TZ)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'cpu_model\t%s\n' "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)"
  printf 'cpus_online\t%s\n' "$(nproc)"
  printf 'loadavg_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'optmem_max\t%s\n' "$(sysctl -n net.core.optmem_max 2>/dev/null || echo ?)"
  printf 'ulimit_l\t%s\n' "$(ulimit -l)"
  printf 'ours\t%s\n' "git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
  printf 'duration_s\t%s\nramp_s\t%s\ntarget_cpus\t%s\nfio_cpus\t%s\nmodes\t%s\n' \
    "$DURATION" "$RAMP" "$TARGET_CPUS" "$FIO_CPUS" "$MODES"
} > "$OUT/meta/meta.tsv"

make_backing_file "$BACKING" "$FILE_SIZE" thick
i=0
for m in $MODES; do
  i=$((i + 1))
  mode=${m%%:*} engine=${m#*:}; [ "$engine" = "$m" ] && engine=uring
  args=(--cores "$TARGET_CPUS" --zerocopy-engine "$engine")
  env=()
  case $mode in
    off) args+=(--tcp_zerocopy 0) ;;
    auto) args+=(--tcp_zerocopy 1) ;;
    on) args+=(--tcp_zerocopy 1); env=(CURVE_TGT_ZEROCOPY_FORCE=1) ;;
    *) die "unknown mode '$m' (off, auto:ENGINE, on:ENGINE)" ;;
  esac
  PORT[$m]=$(free_tcp_port); CTRL[$m]=$((60 + i))
  if [ ${#env[@]} -gt 0 ]; then export "${env[@]}"; fi
  LIB_LOG_NAME="tgtd-${m/:/-}.log" start_target ours "127.0.0.1:${PORT[$m]}" "${CTRL[$m]}" "$TARGET_CPUS" "${args[@]}"
  unset CURVE_TGT_ZEROCOPY_FORCE
  PID[$m]=$LIB_LAST_PID
  setup_single_lu "${CTRL[$m]}" 1 "$IQN" file "$BACKING"
done

printf 'mode\tjob\tbs\tqd\tfio_rc\ttarget_cpu_s\tbw_bytes\tloadavg1\n' > "$OUT/runs.tsv"
k=0
for j in "${JOBS[@]}"; do
  read -r name rw bs qd <<<"$j"
  # Alternate the order of the modes job by job, so drift falls on all alike.
  order=($MODES); ((k % 2)) && order=($(printf '%s\n' "${order[@]}" | tac))
  k=$((k + 1))
  for m in "${order[@]}"; do
    json="$OUT/fio/${m/:/-}-$name.json" rc=0
    url="iscsi://127.0.0.1:${PORT[$m]}/$IQN/1"
    load=$(cut -d' ' -f1 /proc/loadavg)
    log "$m $name (load $load)"
    c0=$(proc_cpu_ticks "${PID[$m]}")
    timeout -k 5 $((DURATION + RAMP + 60)) taskset -c "$FIO_CPUS" "$FIO" --name="$name" \
      --ioengine=libiscsi --filename="${url//:/\\:}" --initiator=iqn.2026-11.io.curve-tgt:zc-fio \
      --rw="$rw" --bs="$bs" --iodepth="$qd" --time_based=1 --runtime="$DURATION" --ramp_time="$RAMP" \
      --output-format=json --output="$json" > "$json.log" 2>&1 || rc=$?
    c1=$(proc_cpu_ticks "${PID[$m]}")
    tadm "${CTRL[$m]}" --lld iscsi --op stat --mode sys > "${json%.json}.stat.txt" 2>&1 || true
    bw=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["read"]["bw_bytes"])' "$json" 2>/dev/null || echo 0)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$m" "$name" "$bs" "$qd" "$rc" \
      "$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz}')" "$bw" "$load" >> "$OUT/runs.tsv"
  done
done
for m in $MODES; do stop_target "${CTRL[$m]}"; done

"$PYTHON" - "$OUT" "$DURATION" "$RAMP" <<'PY'
import csv, sys, os
out, dur, ramp = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = list(csv.DictReader(open(os.path.join(out, "runs.tsv")), delimiter="\t"))
meta = dict(l.rstrip("\n").split("\t", 1) for l in open(os.path.join(out, "meta/meta.tsv")))
lines = ["# Zero-copy Data-In: off / auto / on, one run", ""]
lines += ["| " + k + " | " + v + " |" for k, v in meta.items()]
lines.insert(2, "| key | value |\n|---|---|")
lines += ["", "The machine is shared (2 cores, other builds running): only ratios within this run "
          "count, and even they move by ±15%. Loopback always copies, so no mode can gain here.", ""]
for job in dict.fromkeys(r["job"] for r in rows):
    rs = [r for r in rows if r["job"] == job]
    base = next((r for r in rs if r["mode"] == "off"), rs[0])
    def per_gb(r):
        gb = float(r["bw_bytes"]) * (dur + ramp) / 1e9
        return float(r["target_cpu_s"]) / gb if gb > 0 else float("nan")
    lines += [f"## {job}", "",
              "| mode | MiB/s | ratio to off | target CPU s per GB | ratio to off | fio rc | load before |",
              "|---|---|---|---|---|---|---|"]
    b_bw, b_cpu = float(base["bw_bytes"]), per_gb(base)
    for r in rs:
        bw = float(r["bw_bytes"])
        lines.append(f"| {r['mode']} | {bw / 2**20:.0f} | {bw / b_bw if b_bw else float('nan'):.2f} | "
                     f"{per_gb(r):.3f} | {per_gb(r) / b_cpu if b_cpu else float('nan'):.2f} | "
                     f"{r['fio_rc']} | {r['loadavg1']} |")
    lines.append("")
lines += ["CPU per GB: the target's utime+stime over the fio run (ramp included) divided by the "
          "bytes read in it (bandwidth x (runtime + ramp)). Per-mode `--op stat` output, with "
          "the zero-copy table, is in `fio/*.stat.txt`.", ""]
open(os.path.join(out, "report.md"), "w").write("\n".join(lines))
print("\n".join(lines))
PY
log "report: $OUT/report.md"
