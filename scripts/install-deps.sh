#!/usr/bin/env bash
# Install what the tests (and, with --bench, the benchmarks) need on Debian 12. Idempotent:
# when everything is present it only checks, without apt-get update.
#
# Every mode installs what building needs: build-essential (cc, the linker Rust calls, and
# libc's startup files), pkg-config. The Rust toolchain itself comes from rustup (README).
#   bash scripts/install-deps.sh --build    # building only (scripts/install.sh)
#   bash scripts/install-deps.sh --demo     # demo: libiscsi-bin (iscsi-ls/-inq), iproute2
#   bash scripts/install-deps.sh            # tests: libiscsi-bin, tgt, iproute2, python3, ...
#   bash scripts/install-deps.sh --bench    # also iperf3, python3-matplotlib, and fio with the
#                                           # libiscsi engine in /opt/fio-iscsi (built by
#                                           # ../shared/scripts/build-fio-libiscsi.sh, ~1 min)
set -euo pipefail
BENCH=0 DEMO=0 BUILD=0
for a in "$@"; do
  case $a in
    --build) BUILD=1 ;;
    --bench) BENCH=1 ;;
    --demo) DEMO=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option '$a'" >&2; exit 2 ;;
  esac
done
export DEBIAN_FRONTEND=noninteractive

# libiscsi-bin: iscsi-test-cu, iscsi-inq, iscsi-ls (conformance, demo);
# tgt: Debian's tgtd/tgtadm (the reference target, and a tgtadm to compare against);
# iproute2: ss (port checks); procps, util-linux: taskset, fallocate; coreutils: timeout, stdbuf.
# lsof: Debian's tgt-admin asks it whether a backing file is in use (tgt_admin_corpus tests).
build=(build-essential pkg-config)
pkgs=("${build[@]}" libiscsi-bin tgt iproute2 procps util-linux coreutils python3 ca-certificates lsof)
if [ "$BENCH" = 1 ]; then pkgs+=(iperf3 python3-matplotlib); fi
# The demo needs no tgt: installing it may start a system tgtd on port 3260, the demo's port.
if [ "$DEMO" = 1 ]; then pkgs=("${build[@]}" libiscsi-bin iproute2 util-linux coreutils); fi
if [ "$BUILD" = 1 ]; then pkgs=("${build[@]}"); fi
# tgt's package starts a system tgtd on the default socket and port 3260; these scripts never
# use that instance (they run their own on private sockets), so leave it as the package set it.

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "need root to install: ${missing[*]}" >&2; exit 1; }
  echo "installing: ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "OK: packages present (${pkgs[*]})"
fi

# qemu-img's iscsi:// driver (qemu-block-extra) for the end-to-end data test. It must match the
# installed qemu-utils exactly (this machine's comes from bookworm-backports), and
# `qemu-img --help` lists iscsi even when the module is missing, so check the package itself.
if [ "$DEMO" = 0 ] && [ "$BUILD" = 0 ]; then
  qver=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [ -z "$qver" ]; then
    apt-get update -q && apt-get install -y -q qemu-utils
    qver=$(dpkg-query -W -f='${Version}' qemu-utils)
  fi
  have=$(dpkg-query -W -f='${Status} ${Version}' qemu-block-extra 2>/dev/null || true)
  if [ "$have" != "install ok installed $qver" ]; then
    if ! apt-cache madison qemu-block-extra 2>/dev/null | grep -qF "$qver"; then
      if ! grep -qs 'bookworm-backports' /etc/apt/sources.list.d/* /etc/apt/sources.list; then
        mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
        [ -n "$mirror" ] || { echo "ERROR: no Debian mirror in the apt sources" >&2; exit 1; }
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
          "$mirror" > /etc/apt/sources.list.d/backports.sources
      fi
      apt-get update -q
    fi
    apt-get install -y -q --no-install-recommends "qemu-block-extra=$qver"
  fi
  echo "OK: qemu-block-extra $qver (qemu-img iscsi://)"
fi

if [ "$BENCH" = 1 ]; then
  FIO=${FIO:-/opt/fio-iscsi/fio}
  if [ -x "$FIO" ] && "$FIO" --enghelp 2>/dev/null | grep -qw libiscsi; then
    echo "OK: $FIO has the libiscsi ioengine"
  else
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    build="${SHARED_DIR:-$repo/../shared}/scripts/build-fio-libiscsi.sh"
    [ -f "$build" ] || { echo "ERROR: $build not found: the shared scripts must sit beside the repository checkout (../shared), or set SHARED_DIR" >&2; exit 1; }
    bash "$build"
  fi
fi
