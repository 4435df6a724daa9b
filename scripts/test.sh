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
# The Debian package builds, installs with its units in place, and goes.
PROFILE=dev bash scripts/package-deb.sh --check
# E2E tests mostly wait on containers: run more of them than there are cores.
cargo test --locked -- --test-threads "${CLUSTERUP_TEST_THREADS:-6}" "$@"
