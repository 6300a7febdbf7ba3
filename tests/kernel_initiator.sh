#!/bin/bash
# The Linux kernel initiator (iscsi_tcp + open-iscsi) against our tgtd from target/release,
# through ../shared/scripts/vm-initiator/vm-initiator.sh: a QEMU guest running Debian's
# kernel and open-iscsi reaches a private tgtd on 127.0.0.1 (issue 12, item 5).
#
#   bash tests/kernel_initiator.sh            # from the repository root, as root
#
# Checks, one PASS/FAIL line each:
#   1 discovery  2 login  3 O_DIRECT pattern I/O, compared with the backing file on the host
#   4 backing file grown, tgtadm --params disksize=auto, iscsiadm -m node -R sees the size
#   5 node.session.cmds_max/queue_depth 512 (the kernel shows 497: 15 kept for management)
#   6 fio randrw with crc32c verification at QD 32 and 512    7 logout
#   8 CHAP (after step 2, on a second target): a wrong secret refused, the right one (mutual
#     CHAP) logs in and reads data matching the host's file, logout
# Ends with `kernel_initiator: N passed, M failed`; exit 0 only when all 8 passed, 1 when one
# failed, 2 when the test could not run (count that as one failure).
#
# Needs: root, apt (the guest's kernel and open-iscsi are Debian packages fetched with
# apt-get download; host packages qemu-system-x86, kmod, cpio are installed here when
# missing), ~400 MB in $VMI_HOME (/opt/vm-initiator), network to a Debian mirror the first
# time. About 2-3 minutes on 2 cores (software emulation). The targets are configured from a
# targets.conf by our tgt-admin. Env: TGTD, TGTADM, TGT_ADMIN (binaries),
# VMI (path of vm-initiator.sh), KI_LOGS (log directory, default a temp dir).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
TGTD=${TGTD:-$ROOT/target/release/tgtd}
TGTADM=${TGTADM:-$ROOT/target/release/tgtadm}
TGT_ADMIN=${TGT_ADMIN:-$ROOT/target/release/tgt-admin}
VMI=${VMI:-$ROOT/../shared/scripts/vm-initiator/vm-initiator.sh}
[ -f "$VMI" ] || VMI=/work/shared/scripts/vm-initiator/vm-initiator.sh
IQN1=iqn.2026-11.io.curve-tgt:kernel-initiator
IQN2=iqn.2026-11.io.curve-tgt:kernel-initiator-chap
T0=$SECONDS

setup_fail() { echo "kernel_initiator: cannot run: $*"; echo "kernel_initiator: 0 passed, 1 failed"; exit 2; }
[ "$(id -u)" = 0 ] || setup_fail "needs root (QEMU, apt-get)"
[ -x "$TGTD" ] && [ -x "$TGTADM" ] && [ -x "$TGT_ADMIN" ] ||
  setup_fail "build first: cargo build --release ($TGTD, tgtadm, tgt-admin)"
[ -f "$VMI" ] || setup_fail "vm-initiator.sh not found (VMI=...)"

# Host packages the harness uses; waiting for the dpkg lock (other jobs may hold it), and
# taking qemu from bookworm-backports when the installed qemu-utils comes from there.
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v depmod >/dev/null || missing+=(kmod)
command -v cpio >/dev/null || missing+=(cpio)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt_i() { timeout 900 apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@"; }
  apt_i "${missing[@]}" || apt_i -t bookworm-backports "${missing[@]}" ||
    { timeout 600 apt-get -o DPkg::Lock::Timeout=600 update -q &&
      { apt_i "${missing[@]}" || apt_i -t bookworm-backports "${missing[@]}"; }; } ||
    setup_fail "apt-get install ${missing[*]} failed"
fi
# The guest build resolves linux-image-amd64 through apt's lists.
apt-cache depends linux-image-amd64 >/dev/null 2>&1 ||
  timeout 600 apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null ||
  setup_fail "apt-get update failed"

DIR=$(mktemp -d /tmp/kernel-initiator.XXXXXX) || setup_fail "mktemp"
LOGS=${KI_LOGS:-$DIR}
mkdir -p "$LOGS"
export TGT_IPC_SOCKET=$DIR/socket
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CTL=$((20000 + PORT % 10000))
TPID=
cleanup() {
  if [ -n "$TPID" ] && kill -0 "$TPID" 2>/dev/null; then
    kill -KILL "$TPID" 2>/dev/null   # tgtd ignores SIGTERM, as tgt's does
    wait "$TPID" 2>/dev/null
  fi
  rm -f "$DIR/disk1" "$DIR/disk2"
  [ "$LOGS" = "$DIR" ] || rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$TGTD" -f -C "$CTL" --iscsi "portal=127.0.0.1:$PORT" >"$LOGS/tgtd.log" 2>&1 &
TPID=$!
adm() { timeout 20 "$TGTADM" -C "$CTL" "$@"; }
up=0
for _ in $(seq 200); do adm --op show --mode sys >/dev/null 2>&1 && { up=1; break; }; sleep 0.05; done
[ $up = 1 ] || { tail -5 "$LOGS/tgtd.log"; setup_fail "tgtd did not come up"; }

# The targets come from a targets.conf applied by our tgt-admin (tgt's service start):
# target 1 (tid 1: tgt-admin numbers targets in name order; LUN 1, which step 4 grows) open
# to all, target 2 with mutual CHAP.
truncate -s 128M "$DIR/disk1"
head -c 16M /dev/urandom >"$DIR/disk2"
SUM2=$(head -c 1048576 "$DIR/disk2" | sha256sum | cut -c1-64)
cat >"$DIR/targets.conf" <<CONF
default-driver iscsi
<target $IQN1>
    backing-store $DIR/disk1
</target>
<target $IQN2>
    <backing-store $DIR/disk2>
        lun 1
    </backing-store>
    incominguser alice alicesecret12
    outgoinguser bob bobsecret1234
</target>
CONF
timeout 60 "$TGT_ADMIN" -C "$CTL" -v -e -c "$DIR/targets.conf" >"$LOGS/tgt-admin.log" 2>&1 ||
  { cat "$LOGS/tgt-admin.log"; setup_fail "tgt-admin -e failed"; }
adm --op show --mode target >"$LOGS/show-target.txt" 2>&1
grep -q "Target 1: $IQN1\$" "$LOGS/show-target.txt" && grep -q "bob (outgoing)" "$LOGS/show-target.txt" ||
  { cat "$LOGS/show-target.txt"; setup_fail "tgt-admin did not configure the targets as expected"; }

# Step 8 runs in the guest right after step 2's login (vm-initiator's VMI_AFTER_LOGIN hook).
P=10.0.2.2:$PORT
read -r -d '' CHAP <<HOOK
N="iscsiadm -m node -T $IQN2 -p $P"
set_auth() { \$N -o update -n node.session.auth.\$1 -v "\$2" >/dev/null; }
\$N -o new >/dev/null
set_auth authmethod CHAP; set_auth username alice; set_auth password wrongsecret99
if \$N --login >/tmp/chap1 2>&1; then echo "VMI-CHAP wrong-secret accepted"; \$N --logout >/dev/null 2>&1
else echo "VMI-CHAP wrong-secret refused: \$(grep iscsiadm: /tmp/chap1 | tail -1)"; fi
set_auth password alicesecret12; set_auth username_in bob; set_auth password_in bobsecret1234
if \$N --login; then echo "VMI-CHAP login ok"; fi
cd=; i=0
while [ -z "\$cd" ] && [ \$i -lt 100 ]; do
  for s in /sys/class/iscsi_session/session*; do
    [ "\$(cat \$s/targetname 2>/dev/null)" = "$IQN2" ] || continue
    for b in \$s/device/target*/*:*:*:*/block/*; do [ -e "\$b" ] && cd=\$(basename \$b); done
  done
  [ -n "\$cd" ] || sleep 0.1; i=\$((i + 1))
done
if [ -n "\$cd" ]; then
  echo "VMI-CHAP disk /dev/\$cd \$(blockdev --getsize64 /dev/\$cd) bytes"
  sum=\$(dd if=/dev/\$cd bs=1M count=1 iflag=direct 2>/dev/null | sha256sum | cut -c1-64)
  [ "\$sum" = "$SUM2" ] && echo "VMI-CHAP data matches" || echo "VMI-CHAP data differs: \$sum"
fi
\$N --logout >/dev/null && echo "VMI-CHAP logout ok"
\$N -o delete
i=0; while [ -n "\$cd" ] && [ -e /sys/block/\$cd ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done
true
HOOK

echo "kernel_initiator: tgtd $TGTD on 127.0.0.1:$PORT (control port $CTL); logs in $LOGS"
VMI_BACKING=$DIR/disk1 VMI_TGTADM=$TGTADM VMI_CTL=$CTL VMI_AFTER_LOGIN=$CHAP \
  bash "$VMI" "$PORT" "$IQN1" 1234567 2>&1 | tee "$LOGS/vm-initiator.log"
vrc=${PIPESTATUS[0]}
[ "$vrc" = 2 ] && setup_fail "vm-initiator.sh could not run (see $LOGS/vm-initiator.log)"

pass=0 fail=0
for s in 1 2 3 4 5 6 7; do
  line=$(grep -E "^STEP $s (PASS|FAIL|SKIP) " "$LOGS/vm-initiator.log" | tail -1)
  case $line in
    "STEP $s PASS"*) pass=$((pass + 1)); echo "PASS kernel_initiator step $s: ${line#STEP $s PASS  }" ;;
    *) fail=$((fail + 1)); echo "FAIL kernel_initiator step $s: ${line:-no result}" ;;
  esac
done
L=$LOGS/vm-initiator.log
if grep -q 'VMI-CHAP wrong-secret refused' "$L" && grep -q 'VMI-CHAP login ok' "$L" &&
   grep -q 'VMI-CHAP data matches' "$L" && grep -q 'VMI-CHAP logout ok' "$L"; then
  pass=$((pass + 1)); echo "PASS kernel_initiator step 8: CHAP: wrong secret refused; mutual CHAP login, data matches the host file, logout"
else
  fail=$((fail + 1)); echo "FAIL kernel_initiator step 8: CHAP: $(grep -o 'VMI-CHAP.*' "$L" | tr '\n' ';')"
fi
if ! kill -0 "$TPID" 2>/dev/null; then
  fail=$((fail + 1)); echo "FAIL kernel_initiator: tgtd exited during the run (see $LOGS/tgtd.log)"
fi
echo "kernel_initiator: $((SECONDS - T0)) s"
echo "kernel_initiator: $pass passed, $fail failed"
[ "$fail" = 0 ]
