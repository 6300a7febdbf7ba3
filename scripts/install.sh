#!/usr/bin/env bash
# Build curve-tgt (release) and install its programs where an admin expects them:
#   $PREFIX/sbin/tgtd, tgtadm, tgt-admin (when built), $PREFIX/share/man/man8/*.8
# and, with --service, the systemd unit (curve-tgt.service, alias tgt.service), its helper
# $PREFIX/lib/curve-tgt/tgt-service, /etc/default/curve-tgt and /etc/tgt/targets.conf (an
# existing configuration file is never overwritten).
#
#   bash scripts/install.sh                         # PREFIX=/usr/local, as root
#   bash scripts/install.sh --service               # also the systemd unit
#   PREFIX=/usr DESTDIR=/tmp/root bash scripts/install.sh --service --no-build
# --no-build installs what target/release (or $BIN_DIR) already holds (scripts/build-deb.sh
# uses it).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PREFIX=${PREFIX:-/usr/local}
BIN_DIR=${BIN_DIR:-target/release}
DESTDIR=${DESTDIR:-}
SERVICE=0 BUILD=1
for a in "$@"; do
  case $a in
    --service) SERVICE=1 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option '$a'" >&2; exit 2 ;;
  esac
done

if [ "$BUILD" = 1 ]; then
  command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs), then re-run" >&2; exit 1; }
  bash scripts/install-deps.sh --build
  cargo build --release --bins
fi

root=$DESTDIR
sbin=$root$PREFIX/sbin
man8=$root$PREFIX/share/man/man8
install -d "$sbin" "$man8"
for b in tgtd tgtadm tgt-admin; do
  if [ -x "$BIN_DIR/$b" ]; then
    install -m 0755 "$BIN_DIR/$b" "$sbin/$b"
    echo "installed $PREFIX/sbin/$b"
  elif [ "$b" = tgt-admin ]; then
    echo "note: this build has no tgt-admin yet; Debian's (/usr/sbin/tgt-admin, package tgt) works with our tgtd"
  else
    echo "$BIN_DIR/$b missing: build first (cargo build --release)" >&2; exit 1
  fi
done
for m in packaging/man/*.8; do
  install -m 0644 "$m" "$man8/"
done
echo "installed man pages in $PREFIX/share/man/man8"

if [ "$SERVICE" = 1 ]; then
  if [ "$PREFIX" = /usr ]; then unitdir=$root/lib/systemd/system; else unitdir=$root/etc/systemd/system; fi
  install -d "$unitdir" "$root$PREFIX/lib/curve-tgt" "$root/etc/default" "$root/etc/tgt/conf.d"
  sed -e "s#/usr/sbin/#$PREFIX/sbin/#g" -e "s#/usr/lib/curve-tgt/#$PREFIX/lib/curve-tgt/#g" \
    packaging/systemd/curve-tgt.service > "$unitdir/curve-tgt.service"
  chmod 0644 "$unitdir/curve-tgt.service"
  sed -e "s#^SBIN=\${SBIN:-/usr/sbin}#SBIN=\${SBIN:-$PREFIX/sbin}#" packaging/systemd/tgt-service \
    > "$root$PREFIX/lib/curve-tgt/tgt-service"
  chmod 0755 "$root$PREFIX/lib/curve-tgt/tgt-service"
  [ -e "$root/etc/default/curve-tgt" ] || install -m 0644 packaging/systemd/curve-tgt.default "$root/etc/default/curve-tgt"
  [ -e "$root/etc/tgt/targets.conf" ] || install -m 0644 packaging/targets.conf "$root/etc/tgt/targets.conf"
  echo "installed ${unitdir#"$root"}/curve-tgt.service (then: systemctl daemon-reload; systemctl enable --now curve-tgt)"
fi
