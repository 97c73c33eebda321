#!/usr/bin/env bash
# Switch-port discovery, measured (issue 16 item 6; BENCHMARKS.md "Switch-port discovery"): one
# poll round of a simulated 48-port switch and of 100 of them (snmpsim, the Cisco 3750 walk of the
# tests with a phone on every port), and the location look-ups of calls and HELD while a round
# runs against while none does. Release build (cargo bench), built and run under the shared build
# lock so nothing else on the machine disturbs it.
#   bench/discovery.sh                      both: 1 switch and 100 switches, 5 rounds each
#   bench/discovery.sh --switches 100 --rounds 3
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
bash scripts/ensure-packages.sh snmpsim
exec flock /tmp/sosdesk-build.lock nice cargo bench --locked --bench discovery -- "$@"
