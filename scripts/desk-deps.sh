#!/usr/bin/env bash
# What building and running the desk app needs, installed when missing (./run.sh and ./test.sh):
# the WebKitGTK/Tauri system packages (DESIGN.md), Node.js + npm for ui/, and ui's npm packages
# (exact versions from ui/package-lock.json), then builds ui/dist. `--test` adds what the
# end-to-end tests need: Xvfb, openbox, WebKitWebDriver, Selenium, X tools, tauri-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(libwebkit2gtk-4.1-dev build-essential file libxdo-dev libssl-dev libayatana-appindicator3-dev
      librsvg2-dev libasound2-dev pkg-config)
command -v npm >/dev/null || pkgs+=(nodejs npm)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(xvfb xauth openbox webkit2gtk-driver python3-selenium x11-utils x11-apps sip-tester)
fi
bash scripts/ensure-packages.sh "${pkgs[@]}"

if [ "${1:-}" = "--test" ] && ! command -v tauri-driver >/dev/null && [ ! -x "$HOME/.cargo/bin/tauri-driver" ]; then
  echo "sosdesk: installing tauri-driver (the WebDriver bridge of the desk app's end-to-end tests)" >&2
  cargo install tauri-driver --version 2.1.0 --locked
fi

# ui/: npm ci when node_modules is missing or older than the lock file.
if [ ! -d ui/node_modules ] || [ ui/package-lock.json -nt ui/node_modules ]; then
  (cd ui && npm ci --no-audit --no-fund --loglevel=error)
  touch ui/node_modules
fi
(cd ui && npm run --silent build >/dev/null)
