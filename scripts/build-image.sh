#!/usr/bin/env bash
# Builds the clusterup container image (container/Dockerfile, FROM scratch)
# from what this host has: the clusterup binary, the Docker CLI, the Compose
# plugin, git and a static busybox, each with the shared libraries `ldd`
# lists. No registry is needed.
#   scripts/build-image.sh [TAG]        (default clusterup:local)
# CLUSTERUP_BIN: the binary to put in (default target/release/clusterup,
# built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-clusterup:local}
bin=${CLUSTERUP_BIN:-target/release/clusterup}
[ -x "$bin" ] || cargo build --release
need() { command -v "$1" >/dev/null || { echo "build-image: $1 is missing: $2" >&2; exit 1; }; }
need docker "install Docker (scripts/test.sh does)"
need git "apt-get install git"
[ -x /bin/busybox ] || { echo "build-image: /bin/busybox is missing: apt-get install busybox-static" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
add() { # SRC [DEST]: a file at its path (or DEST) in the image
    local dest=${2:-$1}
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$1" "$root$dest"
}
with_libs() { # SRC DEST: a program and every library it loads
    add "$1" "$2"
    { ldd "$1" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
        while read -r lib; do add "$lib"; done
}
compose=""
for dir in "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" /usr/local/lib/docker/cli-plugins \
    /usr/local/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins /usr/libexec/docker/cli-plugins; do
    if [ -x "$dir/docker-compose" ]; then compose=$dir/docker-compose; break; fi
done
[ -n "$compose" ] || { echo "build-image: the Compose v2 plugin is missing" >&2; exit 1; }

with_libs "$bin" /usr/bin/clusterup
with_libs "$(command -v docker)" /usr/bin/docker
with_libs "$compose" /usr/libexec/docker/cli-plugins/docker-compose
with_libs "$(command -v git)" /usr/bin/git
add /bin/busybox /bin/busybox
for applet in sh wget cat ls kill; do ln -s busybox "$root/bin/$applet"; done
for certs in /etc/ssl/certs/ca-certificates.crt; do [ -f "$certs" ] && add "$certs"; done
mkdir -p "$root/tmp" "$root/var/lib/clusterup" "$root/etc/clusterup" "$root/root"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
cp container/Dockerfile "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
echo "$tag"
