#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installed if missing) into
# target/debian/. `--check` also installs it with dpkg -i, verifies the
# files are in place and the units pass systemd-analyze, then removes it.
# PROFILE=dev builds faster (what the test suite uses); releases use the
# default, release.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/testbed.sh
command -v cargo-deb >/dev/null || { say "installing cargo-deb"; cargo install --quiet --locked cargo-deb; }
profile=${PROFILE:-release}
deb=$(cargo deb --quiet --locked --profile "$profile" | tail -1)
[ -f "$deb" ] || die "cargo deb produced no package"
echo "built $deb"
[ "${1:-}" = --check ] || exit 0
command -v systemd-analyze >/dev/null || apt_install systemd
as_root dpkg -i "$deb" >/dev/null || die "dpkg -i $deb failed"
trap 'as_root dpkg -r clusterup >/dev/null' EXIT
for f in /usr/bin/clusterup /usr/share/man/man1/clusterup.1* /lib/systemd/system/clusterup.service \
         /lib/systemd/system/clusterup.timer /usr/share/bash-completion/completions/clusterup \
         /usr/share/doc/clusterup/examples/clusterup.yaml; do
    ls $f >/dev/null 2>&1 || die "the package did not install $f"
done
/usr/bin/clusterup --version >/dev/null || die "the installed clusterup does not run"
systemd-analyze verify /lib/systemd/system/clusterup.service /lib/systemd/system/clusterup.timer \
    || die "systemd-analyze verify rejects the units"
echo "package check: 1 passed, 0 failed"
