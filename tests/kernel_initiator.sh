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
#   9 (when the Curve cluster kit ../shared/curve/cluster.sh is present; KI_CURVE=0 skips it)
#     the admin docs' resize walkthrough on a curve LU: a private CurveBS cluster, a second
#     tgtd serving a 10 GiB volume; the guest logs in, the host extends the volume to 20 GiB
#     with curve-vol and runs tgtadm --params disksize=auto, the guest's iscsiadm -m node -R
#     sees 20 GiB and writes and reads back 1 MiB at the new end (vm-initiator steps 1 2 4 7)
# Ends with `kernel_initiator: N passed, M failed`; exit 0 only when all steps run passed, 1
# when one failed, 2 when the test could not run (count that as one failure).
#
# Needs: root, apt (the guest's kernel and open-iscsi are Debian packages fetched with
# apt-get download; host packages qemu-system-x86, kmod, cpio are installed here when
# missing), ~400 MB in $VMI_HOME (/opt/vm-initiator), network to a Debian mirror the first
# time. About 2-3 minutes on 2 cores (software emulation), plus about 1.5 for step 9. The
# targets are configured from a targets.conf by our tgt-admin. Env: TGTD, TGTADM, TGT_ADMIN,
# CURVE_VOL (binaries), VMI (path of vm-initiator.sh), KI_LOGS (log directory, default a temp
# dir), KI_CURVE (0: no step 9), CURVE_CLUSTER_SH (the cluster kit).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
TGTD=${TGTD:-$ROOT/target/release/tgtd}
TGTADM=${TGTADM:-$ROOT/target/release/tgtadm}
TGT_ADMIN=${TGT_ADMIN:-$ROOT/target/release/tgt-admin}
CURVE_VOL=${CURVE_VOL:-$ROOT/target/release/curve-vol}
CURVE_CLUSTER_SH=${CURVE_CLUSTER_SH:-$ROOT/../shared/curve/cluster.sh}
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
TPID= CPID= CURVE_UP=
curve_stop() {   # step 9's tgtd and cluster (by PID), when they run
  if [ -n "$CPID" ] && kill -0 "$CPID" 2>/dev/null; then
    kill -KILL "$CPID" 2>/dev/null
    wait "$CPID" 2>/dev/null
  fi
  CPID=
  if [ -n "$CURVE_UP" ]; then
    bash "$CURVE_CLUSTER_SH" stop >>"$LOGS/curve-cluster.log" 2>&1
    rm -rf -- "$CURVE_RUN"
    CURVE_UP=
  fi
}
cleanup() {
  if [ -n "$TPID" ] && kill -0 "$TPID" 2>/dev/null; then
    kill -KILL "$TPID" 2>/dev/null   # tgtd ignores SIGTERM, as tgt's does
    wait "$TPID" 2>/dev/null
  fi
  curve_stop
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
# Step 9: the resize walkthrough on a curve LU (see the header).
curve_step() {
  local base i p ok=0 ctl2 port2 iqn=iqn.2026-11.io.curve-tgt:kernel-initiator-curve grow L9
  for ((i = 0; i < 200 && ok == 0; i++)); do
    base=$((20000 + RANDOM % 12000)); ok=1
    for ((p = base; p < base + 8; p++)); do
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && { ok=0; break; }
    done
  done
  [ "$ok" = 1 ] || { echo "no 8 consecutive free ports"; return 1; }
  CURVE_RUN=$DIR/curve
  export CURVE_RUN CURVE_ETCD_PORT=$base CURVE_MDS_PORT=$((base + 3)) CURVE_CS_PORT=$((base + 5))
  local mds=127.0.0.1:$CURVE_MDS_PORT
  CURVE_UP=1
  echo "kernel_initiator step 9: starting a CurveBS cluster (MDS $mds; log $LOGS/curve-cluster.log)"
  # Curve's chunk server now and then aborts while starting: one more try from scratch.
  bash "$CURVE_CLUSTER_SH" start >>"$LOGS/curve-cluster.log" 2>&1 ||
    { bash "$CURVE_CLUSTER_SH" stop >>"$LOGS/curve-cluster.log" 2>&1
      bash "$CURVE_CLUSTER_SH" start >>"$LOGS/curve-cluster.log" 2>&1; } ||
    { echo "cluster start failed"; return 1; }
  "$CURVE_VOL" --mds "$mds" --user ctest create --filename /ki --length 10 >>"$LOGS/curve-cluster.log" 2>&1 ||
    { echo "curve-vol create failed"; return 1; }
  # A second tgtd whose target 1 LUN 1 is the curve LU (vm-initiator's step 4 grows tid 1 LUN 1).
  port2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  ctl2=$((CTL + 1))
  TGT_IPC_SOCKET=$DIR/socket2 "$TGTD" -f -C "$ctl2" --iscsi "portal=127.0.0.1:$port2" >"$LOGS/tgtd-curve.log" 2>&1 &
  CPID=$!
  adm2() { TGT_IPC_SOCKET=$DIR/socket2 timeout 20 "$TGTADM" -C "$ctl2" "$@"; }
  for _ in $(seq 200); do adm2 --op show --mode sys >/dev/null 2>&1 && break; sleep 0.05; done
  adm2 --lld iscsi --op new --mode target --tid 1 -T "$iqn" &&
    adm2 --lld iscsi --op bind --mode target --tid 1 -I ALL &&
    adm2 --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 --bstype curve \
      --backing-store cbd:pool//ki_ctest_ --bsopts "mds=$mds" ||
    { echo "the curve LU was not created (see $LOGS/tgtd-curve.log)"; return 1; }
  # vm-initiator's step 4 grows a backing file, then runs VMI_TGTADM ... disksize=auto. Here
  # the "file" is a sparse stand-in of the volume's size, and VMI_TGTADM extends the volume
  # with curve-vol to the stand-in's new size before it runs tgtadm: the walkthrough's order.
  truncate -s 10G "$DIR/curve-size"
  grow=$DIR/extend-then-tgtadm
  cat >"$grow" <<GROW
#!/bin/bash
if [[ " \$* " == *" disksize=auto "* ]]; then
  gib=\$((\$(stat -c %s "$DIR/curve-size") >> 30))
  "$CURVE_VOL" --mds "$mds" --user ctest extend --filename /ki --length "\$gib" >&2 || exit 1
  echo "curve-vol extend --filename /ki --length \$gib: ok" >&2
fi
exec "$TGTADM" "\$@"
GROW
  chmod +x "$grow"
  L9=$LOGS/vm-initiator-curve.log
  TGT_IPC_SOCKET=$DIR/socket2 VMI_BACKING=$DIR/curve-size VMI_GROW_TO=$((20 << 30)) \
    VMI_TGTADM=$grow VMI_CTL=$ctl2 bash "$VMI" "$port2" "$iqn" 1247 >"$L9" 2>&1
  grep -E "^--- STEP [0-9] |extend --filename" "$L9"
  grep -q "^STEP 4 PASS" "$L9" && grep -q "^STEP 7 PASS" "$L9" || { echo "see $L9"; return 1; }
  # The kernel saw the unit attention (CAPACITY DATA HAS CHANGED, 2A/09) before the new size.
  grep -q "Capacity data has changed" "$L9" ||
    { echo "the guest kernel did not log 'Capacity data has changed' (see $L9)"; return 1; }
  echo "$(grep -E "^STEP 4 PASS" "$L9" | sed 's/^STEP 4 PASS  //'); guest: Capacity data has changed"
}
if [ "${KI_CURVE:-1}" != 0 ] && [ -f "$CURVE_CLUSTER_SH" ] && [ -x "$CURVE_VOL" ]; then
  # Not in a subshell: the cluster and the second tgtd it starts must be stopped here.
  curve_step >"$LOGS/step9.out" 2>&1; rc9=$?
  out9=$(cat "$LOGS/step9.out")
  printf '%s\n' "$out9" | sed 's/^/  /'
  curve_stop
  if [ "$rc9" = 0 ]; then
    pass=$((pass + 1)); echo "PASS kernel_initiator step 9: curve LU resize: $(printf '%s' "$out9" | tail -1)"
  else
    fail=$((fail + 1)); echo "FAIL kernel_initiator step 9: curve LU resize: $(printf '%s' "$out9" | tail -1)"
  fi
else
  echo "SKIP kernel_initiator step 9: no Curve cluster kit ($CURVE_CLUSTER_SH), no $CURVE_VOL, or KI_CURVE=0"
fi
if ! kill -0 "$TPID" 2>/dev/null; then
  fail=$((fail + 1)); echo "FAIL kernel_initiator: tgtd exited during the run (see $LOGS/tgtd.log)"
fi
echo "kernel_initiator: $((SECONDS - T0)) s"
echo "kernel_initiator: $pass passed, $fail failed"
[ "$fail" = 0 ]
