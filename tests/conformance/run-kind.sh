#!/bin/bash
# cu-kind.sh KIND [EXTRA_CU_FLAGS] — KIND: thick | thin | thin-lbppb1 | readonly | null | removable
ROOT=$(cd "$(dirname "$0")/../.." && pwd)  # repo root (binaries in target/release)
# Env: LUOPTS unused; NODATALOSS=" " runs without --dataloss. Output: /tmp/cuconf-KIND/{out,summary}.txt
K=$1; D=/tmp/cuconf-$K; mkdir -p $D; export TGT_IPC_SOCKET=$D/socket
$ROOT/target/release/tgtd -f -C 14 --cores 0 --iscsi portal=127.0.0.1:13264 > $D/tgtd.log 2>&1 &
PID=$!
for i in $(seq 100); do $ROOT/target/release/tgtadm -C 14 --op show --mode sys >/dev/null 2>&1 && break; sleep 0.1; done
truncate -s 0 $D/lun.img; truncate -s 256M $D/lun.img
A="$ROOT/target/release/tgtadm -C 14 --lld iscsi"
$A --op new --mode target --tid 1 -T iqn.2026-11.io.curve-tgt:cu
case $K in
  null) $A --op new --mode logicalunit --tid 1 --lun 1 -E null -b /dev/null ;;
  *) $A --op new --mode logicalunit --tid 1 --lun 1 -b $D/lun.img ;;
esac
case $K in
  thin) $A --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1 ;;
  thin-lbppb1) $A --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1,lbppbe=0 ;;
  readonly) $A --op update --mode logicalunit --tid 1 --lun 1 --params readonly=1 ;;
  removable) $A --op update --mode logicalunit --tid 1 --lun 1 --params removable=1 ;;
esac
$A --op bind --mode target --tid 1 -I ALL
U=iscsi://127.0.0.1:13264/iqn.2026-11.io.curve-tgt:cu/1
{ echo "# kind=$K cmd: iscsi-test-cu ${NODATALOSS:---dataloss} $2 -i ... -I ... --test=ALL $U $U"
timeout -k 10 900 stdbuf -oL -eL iscsi-test-cu ${NODATALOSS:---dataloss} $2 -i iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test -I iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2 --test=ALL $U $U 2>&1; } > $D/out.txt
kill -9 $PID
python3 /work/shared/scripts/summarize-cu.py $D/out.txt > $D/summary.txt
