# shellcheck shell=bash
# Helpers shared by scripts/, tests/conformance/ and bench/: start an iSCSI target (ours or
# Debian's tgt), configure targets and LUs through tgtadm, and stop it again.
#
#   source "$REPO/scripts/lib.sh"
#   lib_init                              # private run dir + TGT_IPC_SOCKET, cleanup trap
#   port=$(free_tcp_port)
#   start_target ours "127.0.0.1:$port" 41 0     # KIND PORTAL CTRLPORT [taskset cpus]
#   tgt_new_target 41 1 iqn.2026-11.io.curve-tgt:t1
#   tgt_add_lu 41 1 1 file "$LIB_RUN_DIR/lu.img" 256M
#   tgt_bind_all 41 1
#   ...
#   stop_target 41                         # (also done by the exit trap)
#
# Every instance is keyed by its control port (tgtd -C PORT): tgtadm finds the instance's
# management socket at "$TGT_IPC_SOCKET.<port>", and TGT_IPC_SOCKET points into a private
# temporary directory, so these scripts never touch the default /var/run/tgtd/socket.0 of a
# system tgtd. Portals are always loopback addresses.
#
# Which binaries a KIND uses (override with the environment):
#   ours: $OURS_TGTD (default $REPO/target/release/tgtd), $OURS_TGTADM (…/tgtadm)
#   tgt:  $TGT_TGTD  (default /usr/sbin/tgtd),            $TGT_TGTADM  (/usr/sbin/tgtadm)
# Our tgtd must accept tgt's `-f -C PORT --iscsi portal=ADDR:PORT` and honour TGT_IPC_SOCKET;
# our tgtadm must speak tgt's protocol and flags. Either tgtadm can drive either tgtd.

LIB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OURS_TGTD=${OURS_TGTD:-$LIB_REPO/target/release/tgtd}
OURS_TGTADM=${OURS_TGTADM:-$LIB_REPO/target/release/tgtadm}
TGT_TGTD=${TGT_TGTD:-/usr/sbin/tgtd}
TGT_TGTADM=${TGT_TGTADM:-/usr/sbin/tgtadm}
# Debian's python3-* packages (matplotlib) belong to /usr/bin/python3; prefer it over a
# python3 that happens to come first in PATH (pyenv and the like).
PYTHON=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3 || echo python3)}
# Upper bounds for every wait below, in polls of 0.1 s.
LIB_START_POLLS=${LIB_START_POLLS:-100}
LIB_STOP_POLLS=${LIB_STOP_POLLS:-50}

declare -gA LIB_TGT_PID=()    # control port -> tgtd PID
declare -gA LIB_TGT_KIND=()   # control port -> ours|tgt
declare -gA LIB_TGT_LOG=()    # control port -> tgtd's stderr/stdout log
LIB_RUN_DIR=${LIB_RUN_DIR:-}   # private temp dir: sockets, backing files (removed at exit)
LIB_LOG_DIR=${LIB_LOG_DIR:-}   # where tgtd logs go (default: LIB_RUN_DIR)
LIB_LOG_NAME=${LIB_LOG_NAME:-} # name of the next tgtd log (default tgtd-KIND-CTRLPORT.log)
LIB_LAST_PID=

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit "${LIB_DIE_STATUS:-1}"; }

# Shared scripts live beside the repository checkout (CI: X/main next to X/shared).
shared_script() {
  local p
  for p in "${SHARED_DIR:-}" "$LIB_REPO/../shared" /work/shared; do
    [ -n "$p" ] && [ -f "$p/scripts/$1" ] && { echo "$p/scripts/$1"; return 0; }
  done
  die "shared script '$1' not found: expected ../shared/scripts/$1 beside the repository (set SHARED_DIR to override)"
}

# Create the private run directory and install the cleanup trap. Callers that need their own
# EXIT trap should call lib_cleanup from it.
lib_init() {
  if [ -z "$LIB_RUN_DIR" ]; then
    # tmpfs when there is one: backing files made here cost no disk I/O.
    local base=${LIB_TMP:-/dev/shm}
    [ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
    LIB_RUN_DIR=$(mktemp -d "$base/curve-tgt-run.XXXXXX")
  fi
  mkdir -p "$LIB_RUN_DIR"
  export TGT_IPC_SOCKET="$LIB_RUN_DIR/socket"
  trap lib_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

lib_cleanup() {
  local rc=$? port
  for port in "${!LIB_TGT_PID[@]}"; do
    stop_target "$port" || true
  done
  if [ -n "$LIB_RUN_DIR" ] && [ -z "${LIB_KEEP_RUN_DIR:-}" ]; then
    rm -rf -- "$LIB_RUN_DIR"
  fi
  return "$rc"
}

# "base" is a second build of ours (bench/run.sh OURS_BASE=<rev>: $BASE_TGTD, $BASE_TGTADM).
tgtd_bin()   { case $1 in ours) echo "$OURS_TGTD";;   tgt) echo "$TGT_TGTD";;   base) echo "${BASE_TGTD:?}";;   *) die "unknown target kind '$1' (ours|tgt|base)";; esac; }
tgtadm_bin() { case $1 in ours) echo "$OURS_TGTADM";; tgt) echo "$TGT_TGTADM";; base) echo "${BASE_TGTADM:?}";; *) die "unknown target kind '$1' (ours|tgt|base)";; esac; }

# tadm CTRLPORT ARGS...: run the instance's tgtadm against its private socket, bounded in time
# (tgtadm retries a vanished socket forever; a wedged tgtd never answers).
LIB_TGTADM_TIMEOUT=${LIB_TGTADM_TIMEOUT:-20}
tadm() {
  local port=$1; shift
  local kind=${LIB_TGT_KIND[$port]:-tgt}
  timeout -k 2 "$LIB_TGTADM_TIMEOUT" "$(tgtadm_bin "$kind")" -C "$port" "$@"
}

# A TCP port on 127.0.0.1 with no listener, from 20000-29999 (below the kernel's ephemeral
# range, so outgoing connections do not take it meanwhile). Other people's targets may be
# running on this machine, so never assume a fixed port is free.
port_is_listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
free_tcp_port() {
  local i p
  for i in $(seq 1 100); do
    p=$(( 20000 + (RANDOM % 10000) ))
    port_is_listening "$p" || { echo "$p"; return 0; }
  done
  die "no free TCP port found after $i tries"
}

# start_target KIND ADDR:PORT CTRLPORT [CPUS] [EXTRA_TGTD_ARGS...]
# Starts tgtd in the foreground (-f) as a child of this shell, optionally under taskset, waits
# until its management socket answers and its portal listens, and records the PID in
# LIB_TGT_PID[CTRLPORT] and LIB_LAST_PID.
# shellcheck disable=SC2034  # LIB_TGT_LOG and LIB_LAST_PID are for the scripts that source us
start_target() {
  local kind=$1 portal=$2 ctrl=$3 cpus=${4:-}
  shift 3; [ $# -gt 0 ] && shift
  local bin addr pport i pid logf
  bin=$(tgtd_bin "$kind")
  [ -x "$bin" ] || die "$kind tgtd not found or not executable: $bin"
  [ -x "$(tgtadm_bin "$kind")" ] || die "$kind tgtadm not found: $(tgtadm_bin "$kind")"
  [ -n "$LIB_RUN_DIR" ] || lib_init
  addr=${portal%:*}; pport=${portal##*:}
  case $addr in 127.*|'[::1]') ;; *) die "portal must be a loopback address, got '$portal'";; esac
  [ "$ctrl" != 0 ] || die "control port 0 is the system tgtd's; use another"
  [ -n "${LIB_TGT_PID[$ctrl]:-}" ] && die "control port $ctrl already in use by PID ${LIB_TGT_PID[$ctrl]}"
  port_is_listening "$pport" && die "portal port $pport already has a listener (another target?)"

  logf="${LIB_LOG_DIR:-$LIB_RUN_DIR}/${LIB_LOG_NAME:-tgtd-$kind-$ctrl.log}"
  local -a cmd=("$bin" -f -C "$ctrl" --iscsi "portal=$portal" "$@")
  [ -n "$cpus" ] && cmd=(taskset -c "$cpus" "${cmd[@]}")
  log "starting $kind: TGT_IPC_SOCKET=$TGT_IPC_SOCKET ${cmd[*]}"
  "${cmd[@]}" >"$logf" 2>&1 </dev/null &
  pid=$!
  LIB_TGT_PID[$ctrl]=$pid; LIB_TGT_KIND[$ctrl]=$kind; LIB_TGT_LOG[$ctrl]=$logf; LIB_LAST_PID=$pid

  # 1. the management socket answers `show --mode sys` with a real body ("System:" first),
  #    so a tgtadm that exits 0 without asking anyone does not count;
  # 2. its portal listens, owned by this PID (tgt keeps running without a portal when bind
  #    fails). Both polls end early, with tgtd's log, if tgtd exits.
  local out
  for ((i = 0; i < LIB_START_POLLS; i++)); do
    target_exited_check "$ctrl" "$pid" "$logf" "before its management socket answered"
    out=$(tadm "$ctrl" --op show --mode sys 2>/dev/null) && [[ $out == System:* ]] && break
    sleep 0.1
  done
  ((i < LIB_START_POLLS)) || { sed 's/^/    tgtd: /' "$logf" >&2; die "$kind tgtd: no 'System:' answer to 'tgtadm -C $ctrl --op show --mode sys' on $TGT_IPC_SOCKET.$ctrl after $LIB_START_POLLS polls"; }
  for ((i = 0; i < LIB_START_POLLS; i++)); do
    target_exited_check "$ctrl" "$pid" "$logf" "before listening on $portal"
    [[ $(ss -Hltnp "sport = :$pport" 2>/dev/null) == *"pid=$pid,"* ]] && break
    sleep 0.1
  done
  ((i < LIB_START_POLLS)) || { sed 's/^/    tgtd: /' "$logf" >&2; die "$kind tgtd (PID $pid) is not listening on $portal"; }
  log "$kind tgtd PID $pid ready: control port $ctrl, portal $portal${cpus:+, cpus $cpus}"
}

target_pid() { echo "${LIB_TGT_PID[$1]:-}"; }

# target_exited_check CTRLPORT PID LOG WHEN: die with tgtd's log and exit status if it is gone.
target_exited_check() {
  local ctrl=$1 pid=$2 logf=$3 rc=0
  kill -0 "$pid" 2>/dev/null && return 0
  wait "$pid" 2>/dev/null || rc=$?
  unset "LIB_TGT_PID[$ctrl]"
  sed 's/^/    tgtd: /' "$logf" >&2
  die "${LIB_TGT_KIND[$ctrl]} tgtd exited (status $rc) $4"
}

# stop_target CTRLPORT: delete all targets (--force), then `delete --mode system`, wait a
# bounded time for the PID to exit, and SIGKILL it if it is still there (tgt ignores SIGTERM).
stop_target() {
  local ctrl=$1 pid tid i
  pid=${LIB_TGT_PID[$ctrl]:-}
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    # Short timeouts: a tgtd that does not answer within 5 s is killed below anyway.
    local LIB_TGTADM_TIMEOUT=5
    for tid in $(tadm "$ctrl" --op show --mode target 2>/dev/null | sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
      tadm "$ctrl" --op delete --mode target --tid "$tid" --force >/dev/null 2>&1 || log "warning: deleting tid $tid on control port $ctrl failed"
    done
    timeout -k 1 5 "$(tgtadm_bin "${LIB_TGT_KIND[$ctrl]}")" -C "$ctrl" --op delete --mode system >/dev/null 2>&1 || true
    for ((i = 0; i < LIB_STOP_POLLS; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "warning: ${LIB_TGT_KIND[$ctrl]} tgtd PID $pid still running after 'delete --mode system'; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  unset "LIB_TGT_PID[$ctrl]"
  log "${LIB_TGT_KIND[$ctrl]} tgtd PID $pid stopped"
}

# make_backing_file PATH SIZE thick|sparse
make_backing_file() {
  local path=$1 size=$2 how=${3:-sparse}
  rm -f -- "$path"
  case $how in
    sparse) truncate -s "$size" "$path" ;;
    thick)  fallocate -l "$size" "$path" 2>/dev/null || { truncate -s "$size" "$path" && dd if=/dev/zero of="$path" bs=1M count="$(( $(stat -c %s "$path") / 1048576 ))" conv=notrunc status=none; } ;;
    *) die "make_backing_file: unknown kind '$how'" ;;
  esac
}

tgt_new_target() { # CTRLPORT TID IQN
  tadm "$1" --lld iscsi --op new --mode target --tid "$2" -T "$3"
}

# tgt_add_lu CTRLPORT TID LUN TYPE [PATH] [SIZE]
#   null      --bstype null --backing-store /dev/null
#   file      rdwr on PATH (created thick with SIZE if SIZE is given)
#   aio       aio on PATH (tgt's libaio store; created like file)
#   thin      rdwr on a sparse PATH plus --params thin_provisioning=1
#   thin512   like thin, with lbppbe=0 (one logical block per physical block)
#   readonly  rdwr on PATH plus --params readonly=1
tgt_add_lu() {
  local ctrl=$1 tid=$2 lun=$3 type=$4 path=${5:-} size=${6:-}
  local bstype=rdwr params=
  case $type in
    null) bstype=null; path=/dev/null ;;
    file|readonly) [ -n "$size" ] && make_backing_file "$path" "$size" thick ;;
    aio) bstype=aio; [ -n "$size" ] && make_backing_file "$path" "$size" thick ;;
    thin|thin512) [ -n "$size" ] && make_backing_file "$path" "$size" sparse ;;
    # Ours in test mode only (CURVE_TGT_TEST_ENGINES=1): an in-memory store whose engine
    # completes out of order after LIB_DELAY_US (MIN-MAX µs); PATH is not used.
    delay) bstype=delay; path="size=${size:-128M}:delay_us=${LIB_DELAY_US:-20-2000}" ;;
    *) die "tgt_add_lu: unknown LU type '$type'" ;;
  esac
  case $type in
    thin) params=thin_provisioning=1 ;;
    thin512) params=thin_provisioning=1,lbppbe=0 ;;
    readonly) params=readonly=1 ;;
  esac
  [ -n "$path" ] || die "tgt_add_lu: LU type $type needs a backing path"
  tadm "$ctrl" --lld iscsi --op new --mode logicalunit --tid "$tid" --lun "$lun" \
    --bstype "$bstype" --backing-store "$path"
  # tgtadm refuses --params on `lu new`; LU parameters go in a following update.
  if [ -n "$params" ]; then
    tadm "$ctrl" --lld iscsi --op update --mode logicalunit --tid "$tid" --lun "$lun" --params "$params"
  fi
}

tgt_bind_all() { # CTRLPORT TID
  tadm "$1" --lld iscsi --op bind --mode target --tid "$2" -I ALL
}

# tgt_set_target_param CTRLPORT TID NAME VALUE, e.g. MaxQueueCmd 512 (tgt's default is 128,
# which caps the queue depth a benchmark can reach).
tgt_set_target_param() {
  tadm "$1" --lld iscsi --op update --mode target --tid "$2" -n "$3" -v "$4"
}

# Convenience: one target TID with one LU 1 of TYPE, bound to everyone.
# setup_single_lu CTRLPORT TID IQN TYPE [PATH] [SIZE]
setup_single_lu() {
  local ctrl=$1 tid=$2 iqn=$3; shift 3
  tgt_new_target "$ctrl" "$tid" "$iqn"
  tgt_add_lu "$ctrl" "$tid" 1 "$@"
  tgt_bind_all "$ctrl" "$tid"
}

# CPU time (utime+stime, all threads) a process has used so far, in clock ticks
# (getconf CLK_TCK per second), from /proc/PID/stat.
proc_cpu_ticks() {
  # Fields 14 and 15 counted after the ")" that ends the command name (which may hold spaces).
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
