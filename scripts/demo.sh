#!/usr/bin/env bash
# The main job on a bundled demo stack: start a local registry and the
# stack at v1, publish v2 of one image, then `clusterup check`, `clusterup
# apply --auto` and `clusterup status`. Leaves the stack running; stop it
# with: scripts/demo.sh --down
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/testbed.sh

export DEMO_REGISTRY=$REGISTRY
STATE=${TMPDIR:-/tmp}/clusterup-demo-state
# The stack runs from a copy outside this repository: inside a git
# checkout, clusterup would follow the checkout's branch in place.
DEMO=${TMPDIR:-/tmp}/clusterup-demo
compose() { docker compose --project-directory "$DEMO" -f "$DEMO/compose.yaml" "$@"; }

if [ "${1:-}" = --down ]; then
    docker compose --project-name clusterup-demo down --timeout 1
    exit 0
fi

command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup, Rust >= 1.89)"
ensure_testbed
cargo build --quiet --locked
BIN=$PWD/target/debug/clusterup
clusterup() { (cd "$DEMO" && "$BIN" --state-dir "$STATE" "$@"); }

publish() { # fixture reference: push to the registry, keep the host's tag
    local previous; previous=$(docker image inspect -f '{{.Id}}' "$2" 2>/dev/null || true)
    docker tag "clusterup-fixture/web:$1" "$2"
    docker push -q "$2" >/dev/null
    [ -z "$previous" ] || docker tag "$previous" "$2"
}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "start the demo stack at v1"
rm -rf "$STATE" "$DEMO"
cp -r demo "$DEMO"
docker image rm "$REGISTRY/clusterup-demo/web:latest" "$REGISTRY/clusterup-demo/sidecar:latest" >/dev/null 2>&1 || true
publish v1 "$REGISTRY/clusterup-demo/web:latest"
publish v1 "$REGISTRY/clusterup-demo/sidecar:latest"
compose up --detach --wait --quiet-pull
echo "web says: $(curl -s "http://127.0.0.1:${DEMO_PORT:-8088}/version")"

step "clusterup check (nothing new yet: exit 0)"
clusterup check --only && echo "exit 0"

step "a new web image (v2) is pushed to the registry"
publish v2 "$REGISTRY/clusterup-demo/web:latest"

step "clusterup check (update pending: exit 100)"
set +e; clusterup check --only; code=$?; set -e
echo "exit $code"

step "clusterup apply --auto (pull, recreate web only, wait for health)"
clusterup apply --auto

step "clusterup status"
clusterup status
echo "web says: $(curl -s "http://127.0.0.1:${DEMO_PORT:-8088}/version")"
echo
echo "The stack is still running; stop it with: scripts/demo.sh --down"
