#!/usr/bin/env bash
# Zero-copy Data-In benchmark (issue 10): our tgtd with zero-copy off, auto and forced on,
# for each engine, in ONE run, alternating modes job by job; sequential reads of 128 KiB
# (iodepth 16) and 1 MiB (iodepth 4) through fio's libiscsi engine. Reports bandwidth and
# target CPU seconds per GB as ratios against copy mode (off).
#
#   bench/zerocopy.sh [options]
#     --duration S        fio runtime per job (default 10)
#     --rounds N          repeat every job N times, the mode order reversed each time; the
#                         report gives each mode's median (default 3: on a loaded machine one
#                         run per mode mostly measures what CPU share it happened to get)
#     --ramp S            fio ramp_time per job (default 2)
#     --target-cpus LIST  CPUs the targets are pinned to (taskset and --cores) (default 0)
#     --fio-cpus LIST     CPUs fio is pinned to (default 1)
#     --modes "LIST"      of off, auto:ENGINE[:SPLIT], on:ENGINE[:SPLIT] (default "off auto:uring
#                         on:uring auto:msg on:msg"); SPLIT: batch (default: a batch with a large
#                         payload is one zero-copy send), payload (--zerocopy-payload-only 1:
#                         payloads zero-copy, headers by copy, registered buffers on uring),
#                         payload-nofixed (the same without registered buffers)
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

DURATION=10 ROUNDS=3 RAMP=2 TARGET_CPUS=0 FIO_CPUS=1 FILE_SIZE=1G OUT=''
MODES="off auto:uring on:uring auto:msg on:msg"
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
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
  printf 'rounds\t%s\n' "$ROUNDS"
  printf 'duration_s\t%s\nramp_s\t%s\ntarget_cpus\t%s\nfio_cpus\t%s\nmodes\t%s\n' \
    "$DURATION" "$RAMP" "$TARGET_CPUS" "$FIO_CPUS" "$MODES"
} > "$OUT/meta/meta.tsv"

make_backing_file "$BACKING" "$FILE_SIZE" thick
i=0
for m in $MODES; do
  i=$((i + 1))
  IFS=: read -r mode engine split <<<"$m"
  engine=${engine:-uring} split=${split:-batch}
  args=(--cores "$TARGET_CPUS" --zerocopy-engine "$engine")
  case $split in
    batch) ;;
    payload) args+=(--zerocopy-payload-only 1) ;;
    payload-nofixed) args+=(--zerocopy-payload-only 1 --zerocopy-fixed-buffers 0) ;;
    *) die "unknown split '$split' in '$m' (batch, payload, payload-nofixed)" ;;
  esac
  env=()
  case $mode in
    off) args+=(--tcp_zerocopy 0) ;;
    auto) args+=(--tcp_zerocopy 1) ;;
    on) args+=(--tcp_zerocopy 1); env=(CURVE_TGT_ZEROCOPY_FORCE=1) ;;
    *) die "unknown mode '$m' (off, auto:ENGINE, on:ENGINE)" ;;
  esac
  PORT[$m]=$(free_tcp_port); CTRL[$m]=$((60 + i))
  if [ ${#env[@]} -gt 0 ]; then export "${env[@]}"; fi
  LIB_LOG_NAME="tgtd-${m//:/-}.log" start_target ours "127.0.0.1:${PORT[$m]}" "${CTRL[$m]}" "$TARGET_CPUS" "${args[@]}"
  unset CURVE_TGT_ZEROCOPY_FORCE
  PID[$m]=$LIB_LAST_PID
  setup_single_lu "${CTRL[$m]}" 1 "$IQN" file "$BACKING"
done

printf 'round\tmode\tjob\tbs\tqd\tfio_rc\ttarget_cpu_s\tbw_bytes\tloadavg1\n' > "$OUT/runs.tsv"
for ((round = 1; round <= ROUNDS; round++)); do
k=$round
for j in "${JOBS[@]}"; do
  read -r name rw bs qd <<<"$j"
  # Reverse the order of the modes job by job and round by round, so that drift (and the
  # load other work puts on the machine) falls on all alike.
  order=($MODES); ((k % 2)) || order=($(printf '%s\n' "${order[@]}" | tac))
  k=$((k + 1))
  for m in "${order[@]}"; do
    json="$OUT/fio/${m//:/-}-$name-r$round.json" rc=0
    url="iscsi://127.0.0.1:${PORT[$m]}/$IQN/1"
    load=$(cut -d' ' -f1 /proc/loadavg)
    log "round $round: $m $name (load $load)"
    c0=$(proc_cpu_ticks "${PID[$m]}")
    timeout -k 5 $((DURATION + RAMP + 60)) taskset -c "$FIO_CPUS" "$FIO" --name="$name" \
      --ioengine=libiscsi --filename="${url//:/\\:}" --initiator=iqn.2026-11.io.curve-tgt:zc-fio \
      --rw="$rw" --bs="$bs" --iodepth="$qd" --time_based=1 --runtime="$DURATION" --ramp_time="$RAMP" \
      --output-format=json --output="$json" > "$json.log" 2>&1 || rc=$?
    c1=$(proc_cpu_ticks "${PID[$m]}")
    tadm "${CTRL[$m]}" --lld iscsi --op stat --mode sys > "${json%.json}.stat.txt" 2>&1 || true
    bw=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["read"]["bw_bytes"])' "$json" 2>/dev/null || echo 0)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$m" "$name" "$bs" "$qd" "$rc" \
      "$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz}')" "$bw" "$load" >> "$OUT/runs.tsv"
  done
done
done
for m in $MODES; do stop_target "${CTRL[$m]}"; done

"$PYTHON" - "$OUT" "$DURATION" "$RAMP" <<'PY'
import csv, sys, os, statistics
out, dur, ramp = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = list(csv.DictReader(open(os.path.join(out, "runs.tsv")), delimiter="\t"))
meta = dict(l.rstrip("\n").split("\t", 1) for l in open(os.path.join(out, "meta/meta.tsv")))
lines = ["# Zero-copy Data-In: off / auto / on, one run", ""]
lines += ["| " + k + " | " + v + " |" for k, v in meta.items()]
lines.insert(2, "| key | value |\n|---|---|")
lines += ["", "The machine is shared (2 cores, other builds running): only ratios within this run "
          "count, and throughput follows the CPU share each run happened to get; target CPU per "
          "GB moves less. Each figure is the median over the rounds (min-max in brackets). "
          "Loopback always copies, so no mode can gain here.", ""]
def per_gb(r):
    gb = float(r["bw_bytes"]) * (dur + ramp) / 1e9
    return float(r["target_cpu_s"]) / gb if gb > 0 else float("nan")
for job in dict.fromkeys(r["job"] for r in rows):
    modes = list(dict.fromkeys(r["mode"] for r in rows if r["job"] == job))
    med = {}
    for m in modes:
        rs = [r for r in rows if r["job"] == job and r["mode"] == m]
        bws = [float(r["bw_bytes"]) for r in rs]
        cpus = [per_gb(r) for r in rs]
        med[m] = (statistics.median(bws), min(bws), max(bws), statistics.median(cpus),
                  min(cpus), max(cpus), len(rs), sum(r["fio_rc"] != "0" for r in rs))
    base = med.get("off", med[modes[0]])
    lines += [f"## {job}", "",
              "| mode | runs | MiB/s | ratio to off | target CPU s per GB | ratio to off | failed fio runs |",
              "|---|---|---|---|---|---|---|"]
    for m in ["off"] + [x for x in modes if x != "off"] if "off" in modes else modes:
        bw, bwlo, bwhi, cpu, clo, chi, n, bad = med[m]
        lines.append(f"| {m} | {n} | {bw / 2**20:.0f} ({bwlo / 2**20:.0f}-{bwhi / 2**20:.0f}) | "
                     f"{bw / base[0] if base[0] else float('nan'):.2f} | {cpu:.3f} ({clo:.3f}-{chi:.3f}) | "
                     f"{cpu / base[3] if base[3] else float('nan'):.2f} | {bad} |")
    lines.append("")
lines += ["CPU per GB: the target's utime+stime over the fio run (ramp included) divided by the "
          "bytes read in it (bandwidth x (runtime + ramp)). Every run is in `runs.tsv`; per-run "
          "`--op stat` output, with the zero-copy table, is in `fio/*.stat.txt`.", ""]
open(os.path.join(out, "report.md"), "w").write("\n".join(lines))
print("\n".join(lines))
PY
log "report: $OUT/report.md"
