#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and end-to-end tests against a real
# Docker engine, Compose v2 and registries, which this script brings up
# first (installing what a fresh Debian machine lacks). Fails, saying why,
# when any of it cannot be made to work: the e2e tests never skip.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/testbed.sh

command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup, Rust >= 1.89)"
ensure_testbed
# The layers keep their order: no module circles, no import running up.
command -v python3 >/dev/null || apt_install python3
python3 scripts/imports.py --check >/dev/null || { python3 scripts/imports.py; die "the module graph has a circle or an upward import (above)"; }
# The Debian package builds, installs with its units in place, and goes.
PROFILE=dev bash scripts/package-deb.sh --check
# E2E tests mostly wait on containers: run more of them than there are cores.
cargo test --locked -- --test-threads "${CLUSTERUP_TEST_THREADS:-6}" "$@"
