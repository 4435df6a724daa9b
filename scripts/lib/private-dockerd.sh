# shellcheck shell=bash
# A second Docker engine whose whole state lives under one directory, so
# a test can restart or kill "the engine" in the middle of an operation
# without touching the machine's main one (/var/run/docker.sock), which
# other tests share. Source it, then:
#   export DOCKER_HOST=$(private_dockerd_start DIR [--live-restore ...])
#   private_dockerd_restart DIR; private_dockerd_stop DIR; private_dockerd_destroy DIR
# Extra dockerd arguments are kept in DIR for later starts; pass e.g.
# --live-restore=false to change them. PD_STORAGE_DRIVER overrides the
# storage driver dockerd picks (overlay2 on this machine's /tmp).
# DIR must be unique per test and at most 66 characters: containerd puts
# a socket 38 characters deep into it and allows paths of 104.

PD_START_TIMEOUT=${PD_START_TIMEOUT:-30}
PD_STOP_TIMEOUT=${PD_STOP_TIMEOUT:-30}
# Subnet claims, shared by every private engine on the machine.
PD_CLAIMS=${PD_CLAIMS:-/run/private-dockerd}

_pd_dir() {
    case $1 in /*) printf '%s\n' "${1%/}" ;; *) printf '%s/%s\n' "$PWD" "${1%/}" ;; esac
}

# The pid from the pid file, only if that process is still this DIR's
# dockerd: a pid file survives a kill -9 and its pid can be reused.
_pd_pid() {
    local pid
    pid=$(cat "$1/dockerd.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -F -- "--exec-root=$1/exec " >/dev/null || return 1
    echo "$pid"
}

# A 10.N.0.0/16 of its own for the engine's networks. Two engines that
# hand out the same subnet put two routes for it on the host, and the
# host (docker-proxy, so every published port) reaches only one of them.
_pd_pool() {
    [ -s "$1/pool" ] && { cat "$1/pool"; return; }
    mkdir -p "$PD_CLAIMS"
    (
        flock 9
        for n in $(seq 1 254); do
            c=$PD_CLAIMS/10.$n
            # A claim whose directory is gone was never destroyed: reuse it.
            [ -L "$c" ] && [ ! -d "$(readlink "$c")" ] && rm -f "$c"
            [ -L "$c" ] && continue
            ip -4 route | grep "^10\.$n\." >/dev/null && continue
            ln -s "$1" "$c" && echo "10.$n.0.0/16" >"$1/pool" && exit 0
        done
        exit 1
    ) 9>"$PD_CLAIMS/lock" || { echo "private-dockerd: no free 10.N.0.0/16 left" >&2; return 1; }
    cat "$1/pool"
}

# The main engine set FORWARD's policy to DROP, and br_netfilter sends
# frames bridged between two containers through FORWARD; with
# --iptables=false nobody lets ours through, so allow our subnet to
# itself. $1: -I or -D.
_pd_forward() {
    local pool rule
    pool=$(cat "$2/pool" 2>/dev/null) || return 0
    rule=(FORWARD -s "$pool" -d "$pool" -m comment --comment "private-dockerd $2" -j ACCEPT)
    if [ "$1" = -I ]; then
        iptables -w -C "${rule[@]}" 2>/dev/null || iptables -w -I "${rule[@]}"
    else
        while iptables -w -D "${rule[@]}" 2>/dev/null; do :; done
    fi
}

# dockerd 20.10 deletes docker0, the main engine's default bridge, while a
# second engine starts or stops (even one given a bridge of its own), and
# the main engine's `docker run` and `docker build` fail until it is back.
# Put it back as it was.
_pd_keep_docker0() {
    local saved=$PD_CLAIMS/docker0
    mkdir -p "$PD_CLAIMS"
    if ip link show docker0 >/dev/null 2>&1; then
        [ -s "$saved" ] || { ip -o -4 addr show docker0 | awk '{print $4}' | head -1; cat /sys/class/net/docker0/mtu; } >"$saved"
    elif [ -s "$saved" ]; then
        local addr mtu
        { read -r addr; read -r mtu; } <"$saved"
        ip link add docker0 type bridge 2>/dev/null || true
        ip addr replace "$addr" dev docker0 && ip link set docker0 mtu "$mtu" up
    fi
}

private_dockerd_start() {
    local dir pid extra=()
    dir=$(_pd_dir "$1")
    shift
    # containerd refuses socket paths over 104 characters and only says so
    # in the log, after dockerd has waited 15 s for it.
    if [ ${#dir} -gt 66 ]; then
        echo "private-dockerd: $dir is longer than 66 characters" >&2
        return 1
    fi
    mkdir -p "$dir/data" "$dir/exec"
    # Arguments given once (e.g. --live-restore) stay for every restart.
    [ $# -gt 0 ] && printf '%s\n' "$@" >"$dir/extra-args"
    [ -s "$dir/extra-args" ] && mapfile -t extra <"$dir/extra-args"
    if ! pid=$(_pd_pid "$dir"); then
        rm -f "$dir/dockerd.pid"
        # After a kill -9 its containerd dies too but stays a zombie until
        # init reaps it, which PID 1 here does late; dockerd takes the
        # zombie for a live containerd, waits for its socket and gives up
        # after 15 s. A zombie's cmdline is empty, a live one names DIR.
        local cpid=$dir/exec/containerd/containerd.pid
        { tr '\0' ' ' <"/proc/$(cat "$cpid")/cmdline"; } 2>/dev/null | grep -F "$dir/exec/containerd/" >/dev/null || rm -f "$cpid"
        # Without --live-restore dockerd stops whatever survived anyway;
        # but a shim orphaned by a kill -9 in the middle of a container
        # start makes every later start of that container fail with "task
        # ...: already exists", and only killing the shim clears it.
        printf '%s\n' "${extra[@]}" | grep -xE -- '--live-restore(=true)?' >/dev/null || _pd_kill_leftovers "$dir"
        local pool
        pool=$(_pd_pool "$dir") || return 1
        _pd_forward -I "$dir"
        # A default bridge of its own: with --bridge=none dockerd deletes
        # docker0 at startup, and docker0 is the main engine's.
        local n=${pool#10.} bridge
        n=${n%%.*}
        bridge=pdbr$n
        ip link show "$bridge" >/dev/null 2>&1 || {
            ip link add "$bridge" type bridge && ip addr add "10.$n.255.1/24" dev "$bridge" && ip link set "$bridge" up
        } || return 1
        # Our own (empty) config file: the default /etc/docker/daemon.json
        # sets data-root, which dockerd refuses alongside --data-root.
        [ -f "$dir/daemon.json" ] || echo '{}' >"$dir/daemon.json"
        # --iptables=false: with it on, dockerd deletes and recreates the
        # DOCKER* chains at startup, which are the main engine's too.
        # Published ports then go through docker-proxy (userland proxy),
        # which is enough for 127.0.0.1 ports. No containerd
        # given: dockerd runs its own, with state under exec/ and data/.
        # Not setsid: a SIGTERM to the test's process group should stop
        # this engine cleanly rather than leak it.
        dockerd --config-file="$dir/daemon.json" --data-root="$dir/data" --exec-root="$dir/exec" \
            --pidfile="$dir/dockerd.pid" --host="unix://$dir/docker.sock" \
            --bridge="$bridge" --iptables=false --ip-forward=false --ip-masq=false --userland-proxy=true \
            --default-address-pool="base=$pool,size=24" \
            ${PD_STORAGE_DRIVER:+--storage-driver="$PD_STORAGE_DRIVER"} \
            "${extra[@]}" </dev/null >>"$dir/dockerd.log" 2>&1 &
        pid=$!
    fi
    local deadline=$((SECONDS + PD_START_TIMEOUT))
    until docker -H "unix://$dir/docker.sock" info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            tail -20 "$dir/dockerd.log" >&2
            echo "private-dockerd: $dir did not come up within ${PD_START_TIMEOUT}s (log: $dir/dockerd.log)" >&2
            return 1
        fi
        sleep 0.2
    done
    _pd_keep_docker0
    echo "unix://$dir/docker.sock"
}

private_dockerd_stop() {
    local dir pid
    dir=$(_pd_dir "$1")
    _pd_keep_docker0
    pid=$(_pd_pid "$dir") || return 0
    kill -TERM "$pid"
    local deadline=$((SECONDS + PD_STOP_TIMEOUT))
    # Not kill -0 alone: our own child stays a zombie until bash reaps it.
    while [ -e "/proc/$pid" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$pid/stat" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            echo "private-dockerd: $dir ignored SIGTERM for ${PD_STOP_TIMEOUT}s; SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
        fi
        sleep 0.1
    done
    _pd_keep_docker0
}

private_dockerd_restart() {
    local dir=$1
    shift
    private_dockerd_stop "$dir" && private_dockerd_start "$dir" "$@"
}

# containerd, its shims and dockerd name DIR on their command line;
# docker-proxy names a container address in our subnet. The comm check
# keeps out shells whose command line merely mentions DIR.
_pd_leftovers() {
    local f p cmd net
    net=$(sed 's/\.0\.0\/16$/./' "$1/pool" 2>/dev/null) || net=none
    for f in /proc/[0-9]*/cmdline; do
        p=${f#/proc/}
        p=${p%/cmdline}
        cmd=$({ tr '\0' ' ' <"$f"; } 2>/dev/null) || continue
        case $(cat "/proc/$p/comm" 2>/dev/null) in
            dockerd | containerd | containerd-shim*) [[ $cmd == *"$1/"* ]] && echo "$p" ;;
            docker-proxy) [[ $cmd == *"-container-ip $net"* ]] && echo "$p" ;;
        esac
    done
}

# A shim's children (the containers) go first, or they outlive it.
_pd_kill_leftovers() {
    local p
    for p in $(_pd_leftovers "$1"); do
        pkill -KILL -P "$p" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
    done
}

private_dockerd_destroy() {
    local dir host m net
    dir=$(_pd_dir "$1")
    [ -d "$dir" ] || return 0
    host=unix://$dir/docker.sock
    # Through the engine first: removing containers and networks is what
    # unmounts layers and deletes netns, veths and bridges properly. A
    # killed engine is started again for that.
    if _pd_pid "$dir" >/dev/null || private_dockerd_start "$dir" >/dev/null 2>&1; then
        docker -H "$host" ps -aq | xargs -r docker -H "$host" rm -f >/dev/null || true
        docker -H "$host" network prune -f >/dev/null || true
    fi
    private_dockerd_stop "$dir" || true
    _pd_kill_leftovers "$dir"
    # Deepest first: overlay and shm mounts, netns files, and the bind
    # mount dockerd puts on data/ itself (left behind after a kill -9).
    awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
    # Bridges outlive a dockerd that never removed its networks.
    if net=$(sed 's/\.0\.0\/16$/./' "$dir/pool" 2>/dev/null); then
        ip -o -4 addr show | awk -v n="$net" 'index($4, n) == 1 {print $2}' | sort -u | while read -r m; do
            ip link del "$m" || true
        done
        rm -f "$PD_CLAIMS/${net%.}"
    fi
    _pd_forward -D "$dir"
    rm -rf "$dir"
    _pd_keep_docker0
}
