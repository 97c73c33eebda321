#!/usr/bin/env bash
# A Debian package of the sosdesk core (docs/deploy.md): the binary, the systemd unit and an
# example config, with dpkg-deb alone (no cargo-deb to build first).
#
#   cargo build --release --locked && scripts/build-deb.sh [BINARY] [OUT_DIR]
#
# BINARY: default target/release/sosdesk (CARGO_TARGET_DIR honoured); OUT_DIR: default the
# binary's folder. Installs:
#   /usr/bin/sosdesk
#   /lib/systemd/system/sosdesk.service      examples/systemd/sosdesk.service
#   /etc/sosdesk/sosdesk.toml                 a conffile: examples/lab.toml, its store under
#                                             /var/lib/sosdesk; edit it, then systemctl reload
#   /usr/share/doc/sosdesk/examples/          the HA example (examples/ha), the lab
# The postinst makes the system user `sosdesk` and enables the unit; it does not start it
# (the example config is a lab on loopback: edit it first, then systemctl start sosdesk).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/sosdesk}
out=${2:-$(dirname "$bin")}
[ -x "$bin" ] || { echo "build-deb: no binary at $bin (cargo build --release --locked)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT

install -D -m 0755 "$bin" "$root/usr/bin/sosdesk"
install -D -m 0644 examples/systemd/sosdesk.service "$root/lib/systemd/system/sosdesk.service"
install -d -m 0755 "$root/etc/sosdesk"
sed -e 's|^path = "../sosdesk-lab.db"|path = "/var/lib/sosdesk/sosdesk.db"|' \
    -e 's|^msag = "msag.csv"|msag = "/etc/sosdesk/msag.csv"|' examples/lab.toml > "$root/etc/sosdesk/sosdesk.toml"
grep -q '^path = "/var/lib/sosdesk/sosdesk.db"' "$root/etc/sosdesk/sosdesk.toml" \
  || { echo "build-deb: examples/lab.toml's [store] path moved: update this script" >&2; exit 1; }
chmod 0640 "$root/etc/sosdesk/sosdesk.toml"
install -m 0644 examples/msag.csv "$root/etc/sosdesk/msag.csv"
install -d "$root/usr/share/doc/sosdesk/examples/ha"
install -m 0644 examples/ha/* "$root/usr/share/doc/sosdesk/examples/ha/"
install -m 0644 examples/lab.toml examples/remote-desk.toml "$root/usr/share/doc/sosdesk/examples/"
install -m 0644 README.md docs/deploy.md docs/ha.md docs/config.md LICENSE "$root/usr/share/doc/sosdesk/"

install -d "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: sosdesk
Version: $version
Architecture: $arch
Maintainer: sosdesk developers <sosdesk@localhost>
Section: net
Priority: optional
Depends: adduser, systemd
Description: enterprise emergency calling (E9-1-1): routing core, audit and security desk
 The sosdesk core routes emergency calls to E9-1-1 providers with the caller's location,
 alerts security desks and keeps a tamper-evident audit log. Runs as the systemd service
 sosdesk (docs/deploy.md).
CONTROL
echo /etc/sosdesk/sosdesk.toml > "$root/DEBIAN/conffiles"
echo /etc/sosdesk/msag.csv >> "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  getent passwd sosdesk >/dev/null || adduser --system --group --home /var/lib/sosdesk --no-create-home sosdesk
  # The config holds passwords: readable by root and the service only.
  chgrp sosdesk /etc/sosdesk/sosdesk.toml && chmod 0640 /etc/sosdesk/sosdesk.toml
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable sosdesk.service >/dev/null
    # An upgrade restarts a running core (the PBX's alternative route or the other HA nodes
    # carry calls meanwhile); a first install waits for the admin's config.
    if systemctl is-active --quiet sosdesk.service; then systemctl restart sosdesk.service; fi
  fi
fi
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now sosdesk.service >/dev/null || true
fi
PRERM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
deb="$out/sosdesk_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
