#!/usr/bin/env bash
# Build the Debian package with dpkg-deb: target/debian/curve-tgt_<version>-1_<arch>.deb.
# It holds /usr/sbin/tgtd, tgtadm, tgt-admin (when this build has it), their man pages, the
# systemd unit curve-tgt.service (alias tgt.service) with tgt's start sequence
# (/usr/lib/curve-tgt/tgt-service), /etc/default/curve-tgt and /etc/tgt/targets.conf
# (conffiles), and Conflicts/Replaces Debian's tgt.
#
#   bash scripts/build-deb.sh                      # cargo build --release, then package
#   BIN_DIR=target/debug OUT=/tmp/deb bash scripts/build-deb.sh --no-build
# Prints the package's path on its last line.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BUILD=1
for a in "$@"; do
  case $a in
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option '$a'" >&2; exit 2 ;;
  esac
done
BIN_DIR=${BIN_DIR:-$REPO/target/release}
OUT=${OUT:-$REPO/target/debian}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
deb="$OUT/curve-tgt_${version}-1_${arch}.deb"

if [ "$BUILD" = 1 ]; then
  bash scripts/install-deps.sh --build
  cargo build --release --bins
fi

stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
BIN_DIR=$BIN_DIR PREFIX=/usr DESTDIR=$stage bash scripts/install.sh --service --no-build >/dev/null
for b in "$stage"/usr/sbin/*; do strip --strip-debug "$b"; done
gzip -9n "$stage"/usr/share/man/man8/*.8
doc=$stage/usr/share/doc/curve-tgt
install -d "$doc"
install -m 0644 README.md "$doc/README.md"
printf 'curve-tgt\n\nLicense: Apache-2.0 (/usr/share/common-licenses/Apache-2.0)\n' > "$doc/copyright"

install -d "$stage/DEBIAN"
installed_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
admin_note=" tgt-admin is Debian's until this build ships its own."
[ -x "$stage/usr/sbin/tgt-admin" ] && admin_note=""
cat > "$stage/DEBIAN/control" <<CONTROL
Package: curve-tgt
Version: ${version}-1
Architecture: ${arch}
Maintainer: curve-tgt developers <curve-tgt@localhost>
Installed-Size: ${installed_kb}
Depends: libc6 (>= 2.34)
Conflicts: tgt
Replaces: tgt
Section: net
Priority: optional
Description: iSCSI target (tgtd, tgtadm, tgt-admin), compatible with tgt
 A thread-per-core io_uring iSCSI target for Curve volumes and local files.
 It takes tgt's tgtd options and tgtadm commands, speaks tgt's management
 protocol and applies /etc/tgt/targets.conf from its systemd unit as tgt's
 unit does.${admin_note}
CONTROL
printf '/etc/default/curve-tgt\n/etc/tgt/targets.conf\n' > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  systemctl enable curve-tgt.service || true
  systemctl start curve-tgt.service || true
fi
SCRIPT
cat > "$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  # Refuses (and so stops the removal) while initiators are connected, as tgt's stop does.
  systemctl stop curve-tgt.service
  systemctl disable curve-tgt.service || true
fi
SCRIPT
cat > "$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  > "$stage/DEBIAN/md5sums"

install -d "$OUT"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
