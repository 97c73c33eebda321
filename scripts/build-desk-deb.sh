#!/usr/bin/env bash
# A Debian package of the desk app with Tauri's bundler (the Tauri CLI from npm, a dev dependency
# of ui/), from the release binary already built:
#
#   (cd ui && npm ci && npm run build) && cargo build --release --locked -p sosdesk-desk
#   scripts/build-desk-deb.sh [OUT_DIR]
#
# CARGO_TARGET_DIR honoured. Writes OUT_DIR/sosdesk-desk_<version>_<arch>.deb (default: the
# bundler's folder, <target>/release/bundle/deb) and checks it: the package's name (not the core's
# `sosdesk`, so both install side by side), its dependencies, the binary without debug info (the
# release profile; symbol names stay for backtraces), the menu entry and the icon. Installs:
#   /usr/bin/sosdesk-desk
#   /usr/share/applications/sosdesk-desk.desktop     "sosdesk security desk" in the menu
#   /usr/share/icons/hicolor/256x256/apps/sosdesk-desk.png
# The packaging settings are packaging/desk/tauri.bundle.json (merged over tauri.conf.json).
# AppImage: see README.md, "The desk app as a package" (the bundler downloads its tools from GitHub).
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
bin=$target/release/sosdesk-desk
tauri=ui/node_modules/.bin/tauri
[ -x "$bin" ] || { echo "build-desk-deb: no binary at $bin (cargo build --release --locked -p sosdesk-desk)" >&2; exit 1; }
[ -x "$tauri" ] || { echo "build-desk-deb: no Tauri CLI at $tauri (cd ui && npm ci)" >&2; exit 1; }
if readelf -S "$bin" | grep -q '\.debug_info'; then
  echo "build-desk-deb: $bin carries debug info: build it with the release profile (cargo build --release)" >&2
  exit 1
fi

CARGO_TARGET_DIR=$target "$tauri" bundle --bundles deb --config packaging/desk/tauri.bundle.json
version=$(sed -n 's/^ *"version": "\(.*\)",/\1/p' tauri.conf.json | head -1)
deb=$target/release/bundle/deb/sosdesk-desk_${version}_$(dpkg --print-architecture).deb
[ -f "$deb" ] || { echo "build-desk-deb: the bundler did not write $deb" >&2; exit 1; }

# What a user gets: checked here so a change to the bundler or its settings cannot slip through.
info=$(dpkg-deb -I "$deb")
contents=$(dpkg-deb -c "$deb")
expect() { grep -q -- "$2" <<<"$1" || { echo "build-desk-deb: $deb: expected $3" >&2; exit 1; }; }
expect "$info" '^ Package: sosdesk-desk$' "the package name sosdesk-desk"
expect "$info" '^ Depends: .*libwebkit2gtk-4.1-0' "a dependency on libwebkit2gtk-4.1-0"
expect "$info" '^ Depends: .*libasound2' "a dependency on libasound2 (the alarm and the call's audio)"
expect "$info" '^ Depends: .*libayatana-appindicator3-1' "a dependency on libayatana-appindicator3-1 (the tray icon)"
expect "$contents" ' \.\?/\?usr/bin/sosdesk-desk$' "usr/bin/sosdesk-desk"
expect "$contents" ' \.\?/\?usr/share/applications/sosdesk-desk.desktop$' "the menu entry"
expect "$contents" ' \.\?/\?usr/share/icons/hicolor/256x256/apps/sosdesk-desk.png$' "the icon"
dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards '*usr/share/applications/sosdesk-desk.desktop' \
  | grep -q '^Name=sosdesk security desk$' || { echo "build-desk-deb: the menu entry lost its name" >&2; exit 1; }

if [ -n "${1:-}" ]; then
  mkdir -p "$1"
  cp "$deb" "$1/"
  deb=$1/$(basename "$deb")
fi
echo "$deb ($(du -h "$deb" | cut -f1)); install: sudo apt install $(realpath "$deb")"
