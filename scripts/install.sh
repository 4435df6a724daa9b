#!/usr/bin/env bash
# Installs clusterup on a host without dpkg: the binary (built here, or the
# one given), man pages, completions, systemd units and an example config.
# PREFIX=/usr/local by default; set DESTDIR to stage elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
bin=${1:-}
if [ -z "$bin" ]; then
    cargo build --release --locked
    bin=target/release/clusterup
fi
install -D -m 0755 "$bin" "$dest$prefix/bin/clusterup"
for page in man/*.1; do install -D -m 0644 "$page" "$dest$prefix/share/man/man1/$(basename "$page")"; done
install -D -m 0644 completions/clusterup.bash "$dest$prefix/share/bash-completion/completions/clusterup"
install -D -m 0644 completions/_clusterup "$dest$prefix/share/zsh/site-functions/_clusterup"
install -D -m 0644 completions/clusterup.fish "$dest$prefix/share/fish/vendor_completions.d/clusterup.fish"
sed "s|/usr/bin/clusterup|$prefix/bin/clusterup|" systemd/clusterup.service | install -D -m 0644 /dev/stdin "$dest/etc/systemd/system/clusterup.service"
install -D -m 0644 systemd/clusterup.timer "$dest/etc/systemd/system/clusterup.timer"
install -D -m 0644 examples/clusterup.yaml "$dest$prefix/share/doc/clusterup/examples/clusterup.yaml"
echo "installed to $dest$prefix; enable with: systemctl enable --now clusterup.timer"
