#!/usr/bin/env bash
# Demo: build curve-tgt, serve a 1 GiB sparse file as LUN 1 of iqn.2026-11.io.curve-tgt:demo
# on 127.0.0.1, print what to paste into another terminal, and show tgtd's log until Ctrl-C,
# which deletes the target and stops tgtd.
#
#   bash scripts/demo.sh [PORT]            (default 3260)
# Environment: KIND=tgt serves the same LUN with Debian's tgtd instead of ours;
# DEMO_NO_BUILD=1 skips cargo build; DEMO_IMG (default /var/tmp/curve-tgt-demo.img) is the
# backing file; it is kept after the demo (delete it yourself).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
cd "$REPO"

PORT=${1:-3260}
KIND=${KIND:-ours}
IQN=iqn.2026-11.io.curve-tgt:demo
IMG=${DEMO_IMG:-/var/tmp/curve-tgt-demo.img}
CTRL=${DEMO_CTRL:-61}     # a control port of our own: a system tgtd keeps its socket.0
URL="iscsi://127.0.0.1:$PORT/$IQN/1"

bash scripts/install-deps.sh --demo
if [ "$KIND" = ours ] && [ -z "${DEMO_NO_BUILD:-}" ]; then
  command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs), then re-run"
  log "cargo build --release"
  cargo build --release
fi
if port_is_listening "$PORT"; then
  ss -Hltnp "sport = :$PORT" >&2 || true
  die "port $PORT is already in use (a system tgtd?); pass another: bash scripts/demo.sh 3261"
fi

lib_init
[ -f "$IMG" ] || { log "creating $IMG (1 GiB, sparse)"; truncate -s 1G "$IMG"; }
start_target "$KIND" "127.0.0.1:$PORT" "$CTRL"
pid=$(target_pid "$CTRL")
setup_single_lu "$CTRL" 1 "$IQN" file "$IMG"

adm=$(tgtadm_bin "$KIND")
cat <<EOF

curve-tgt demo: $KIND tgtd (PID $pid) serves $IMG as LUN 1 of $IQN

  URL:  $URL

In another terminal (apt-get install -y libiscsi-bin if needed):
  iscsi-ls -s iscsi://127.0.0.1:$PORT
  iscsi-inq $URL
  iscsi-readcapacity16 $URL

Administer it with tgtadm (this demo's private management socket):
  TGT_IPC_SOCKET=$TGT_IPC_SOCKET $adm -C $CTRL --op show --mode target

Ctrl-C stops the demo. tgtd's log follows:
EOF
# Foreground: follow the log until tgtd exits or Ctrl-C; the EXIT trap (lib_cleanup) deletes
# the target and stops tgtd by PID.
tail -n +1 -f --pid="$pid" "${LIB_TGT_LOG[$CTRL]}" || true
if ! kill -0 "$pid" 2>/dev/null; then
  die "tgtd (PID $pid) exited on its own; its log is above"
fi
