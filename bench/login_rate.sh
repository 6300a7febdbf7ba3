#!/usr/bin/env bash
# Login rate, ours against Debian's tgtd in one run (issue 11, "churn"): 1000 sequential
# logins (connect, Login to full feature phase, Logout, close) from one client, against each
# target in turn, ROUNDS times alternating which goes first. Prints one JSON line per run and
# the ours/tgt ratio of the medians. Both targets pinned to the same CPU, the client to
# another, each with a null LU (a login touches no medium).
#
#   cargo build --release && bash bench/login_rate.sh            # ~10 s
#   N=2000 ROUNDS=5 TARGET_CPUS=0 CLIENT_CPUS=1 bash bench/login_rate.sh
#   LOGOUT=0 closes each connection right after login instead of logging out.
#   OURS=skip / TGT=skip leave one target out.
#   THREADS=1 also prints, per run, the CPU per login of each of the target's threads by name
#   (which thread the login cost lands on: accept thread, shard, logger).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
N=${N:-1000}
ROUNDS=${ROUNDS:-3}
TARGET_CPUS=${TARGET_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
IQN=iqn.2026-11.io.curve-tgt:login-rate
KINDS=()
[ "${OURS:-}" = skip ] || KINDS+=(ours)
[ "${TGT:-}" = skip ] || KINDS+=(tgt)
[ ${#KINDS[@]} -gt 0 ] || die "nothing to measure (OURS=skip and TGT=skip)"

lib_init
declare -A PORT CTRL
ctrl=$(( 100 + RANDOM % 400 ))
for kind in "${KINDS[@]}"; do
  PORT[$kind]=$(free_tcp_port)
  CTRL[$kind]=$ctrl; ctrl=$((ctrl + 1))
  start_target "$kind" "127.0.0.1:${PORT[$kind]}" "${CTRL[$kind]}" "$TARGET_CPUS" \
    $([ "$kind" = ours ] && echo "--cores $TARGET_CPUS")
  tgt_new_target "${CTRL[$kind]}" 1 "$IQN"
  tgt_add_lu "${CTRL[$kind]}" 1 1 null
  tgt_bind_all "${CTRL[$kind]}" 1
done

# CPU time the target's threads have used, in ns (schedstat: exact, unlike clock ticks).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d", s}'; }
# The same per thread: "<name> <ns>" lines (names with spaces joined by _).
thread_ns() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm" 2>/dev/null)" "$(awk '{print $1}' "$t/schedstat" 2>/dev/null)"
  done
}

declare -A RATES CPUS
for r in $(seq 1 "$ROUNDS"); do
  order=("${KINDS[@]}")
  if [ $((r % 2)) -eq 0 ]; then order=(); for ((i=${#KINDS[@]}-1; i>=0; i--)); do order+=("${KINDS[$i]}"); done; fi
  for kind in "${order[@]}"; do
    pid=$(target_pid "${CTRL[$kind]}")
    [ "${THREADS:-0}" = 1 ] && t0=$(thread_ns "$pid")
    c0=$(cpu_ns "$pid")
    out=$(taskset -c "$CLIENT_CPUS" "$PYTHON" "$(dirname "$0")/login_rate.py" 127.0.0.1 "${PORT[$kind]}" "$IQN" "$N")
    c1=$(cpu_ns "$pid")
    if [ "${THREADS:-0}" = 1 ]; then
      t1=$(thread_ns "$pid")
      # Per thread name: (after - before) / logins, in us; threads summed by name.
      awk -v n="$N" -v kind="$kind" -v r="$r" 'NR == FNR {b[$1] += $2; next} {a[$1] += $2}
        END {for (k in a) printf "  %s round %d thread %s: %.1f us per login\n", kind, r, k, (a[k] - b[k]) / 1000 / (n + 20)}' \
        <(echo "$t0") <(echo "$t1") | sort
    fi
    # Warm-up logins (20) count too: they are part of the CPU the target spent.
    cpu_us=$(awk -v a="$c0" -v b="$c1" -v n="$N" 'BEGIN {printf "%.1f", (b - a) / 1000 / (n + 20)}')
    echo "{\"target\":\"$kind\",\"round\":$r,\"target_cpu_us_per_login\":$cpu_us,${out#\{}"
    CPUS[$kind]="${CPUS[$kind]:-} $cpu_us"
    RATES[$kind]="${RATES[$kind]:-} $(sed -E 's/.*"per_s": ([0-9.]+).*/\1/' <<<"$out")"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for kind in "${KINDS[@]}"; do
  echo "$kind: median $(median <<<"${RATES[$kind]}") logins/s, $(median <<<"${CPUS[$kind]}") target CPU us per login, over $ROUNDS rounds of $N"
done
if [ ${#KINDS[@]} -eq 2 ]; then
  o=$(median <<<"${RATES[ours]}"); t=$(median <<<"${RATES[tgt]}")
  echo "ratio ours/tgt: $(awk -v o="$o" -v t="$t" 'BEGIN {printf "%.2f", o / t}') (logins/s; above 1: ours faster)"
  o=$(median <<<"${CPUS[ours]}"); t=$(median <<<"${CPUS[tgt]}")
  echo "CPU per login ours/tgt: $(awk -v o="$o" -v t="$t" 'BEGIN {printf "%.2f", o / t}') (below 1: ours cheaper)"
fi
