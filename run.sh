#!/usr/bin/env bash
# The run command (README): starts the sosdesk security desk app with the lab config
# (examples/lab.toml) and a demo emergency-services provider (sipp on 127.0.0.1:5070), so
# "Place test call (933)" shows the whole path. Installs what is missing first.
#   ./run.sh                                  the desk app (needs a display)
#   ./run.sh serve --config <file>            the headless routing core (the `sosdesk` CLI)
#   ./run.sh desk --config <file>             the desk app on another config, e.g. a remote desk
#                                             file: ./run.sh desk --config examples/remote-desk.toml
#   ./run.sh <any sosdesk CLI arguments>      e.g. ./run.sh history
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "sosdesk: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
bash scripts/ensure-packages.sh sip-tester
target="${CARGO_TARGET_DIR:-target}"

desk_args=(--config examples/lab.toml)
if [ "${1:-}" = desk ]; then
  shift
  desk_args=("$@")
elif [ $# -gt 0 ]; then
  cargo build --release --locked --bin sosdesk
  exec "$target/release/sosdesk" "$@"
fi

if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "sosdesk: no display (DISPLAY/WAYLAND_DISPLAY unset): the desk app needs a screen." >&2
  echo "sosdesk: to run the routing core headless:  ./run.sh serve --config examples/lab.toml" >&2
  exit 2
fi
bash scripts/desk-deps.sh
cargo build --release --locked -p sosdesk-desk
if [ "${desk_args[*]}" != "--config examples/lab.toml" ]; then
  exec "$target/release/sosdesk-desk" "${desk_args[@]}"
fi
# The demo provider answers every emergency call the lab routes to provider-primary; it stops
# with the app.
sipp -sf tests/sipp/provider_answer.xml -i 127.0.0.1 -p 5070 -m 1000000 -nostdin >/dev/null 2>&1 &
provider=$!
trap 'kill $provider 2>/dev/null || true' EXIT
echo "sosdesk: demo provider (sipp) answering on udp 127.0.0.1:5070" >&2
"$target/release/sosdesk-desk" --config examples/lab.toml
