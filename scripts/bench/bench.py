"""Benchmarks of clusterup on this machine (see run.sh).

Each case runs its commands interleaved, after a warm-up, REPS times, and
reports medians, so a noisy shared machine affects all sides alike."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target/release/clusterup"
REGISTRY = os.environ.get("CLUSTERUP_TEST_REGISTRY", "127.0.0.1:5550")
REPS = int(os.environ.get("REPS", "7"))
SIZES = [int(s) for s in os.environ.get("SIZES", "10 50 200").split()]
STACKS = [int(s) for s in os.environ.get("STACKS", "1 20 50").split()]


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of(fns):
    """Interleaved runs of several commands: {name: median seconds}."""
    for fn in fns.values():
        fn()  # warm-up
    samples = {name: [] for name in fns}
    for _ in range(REPS):
        for name, fn in fns.items():
            samples[name].append(timed(fn))
    return {name: statistics.median(s) for name, s in samples.items()}


class Stack:
    """n services, each its own repository in the local registry."""

    def __init__(self, n, tag, extra="", compose=None):
        self.n = n
        self.name = f"bench{tag}-{os.getpid()}"
        self.dir = Path(tempfile.mkdtemp(prefix="clusterup-bench-")) / self.name
        self.dir.mkdir()
        self.state = self.dir.parent / "state"
        self.images = [f"{REGISTRY}/{self.name}/s{i}:latest" for i in range(n)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.publish, self.images))
        # No health checks: 50 fixture checks a second would load the 2
        # cores more than anything measured here.
        self.compose = compose or (lambda stack, env: "services:\n" + "".join(
            f"  s{i}:\n    image: {img}\n    healthcheck: {{disable: true}}\n"
            + (f"    environment: {{BENCH: '{env}'}}\n" if i == 0 else "")
            for i, img in enumerate(self.images)
        ))
        self.write(0)
        (self.dir.parent / "clusterup.yaml").write_text(
            f"stacks:\n  - name: {self.name}\n    directory: {self.dir}\n"
            f"    health: {{timeout: 60s, stability: 1s}}\n    auto: {{structural: true}}\n{extra}")
        os.chmod(self.dir.parent / "clusterup.yaml", 0o600)
        sh("docker", "compose", "up", "-d", "--quiet-pull", cwd=self.dir)

    def write(self, env):
        (self.dir / "compose.yaml").write_text(self.compose(self, env))

    @staticmethod
    def publish(image, fixture="v1"):
        # An image of its own for each reference, as on a real host (cup
        # tells images apart by id).
        dockerfile = f"FROM clusterup-fixture/web:{fixture}\nLABEL bench.reference={image}\n".encode()
        for attempt in range(3):
            built = subprocess.run(["docker", "build", "-q", "-t", image, "-"], capture_output=True, input=dockerfile)
            if built.returncode == 0:
                break
            # Seen with eight classic builds at once on Docker 20.10: a
            # layer another build was committing. Once more is enough.
            print(f"warning: building {image}: {built.stderr.decode().strip()[-200:]}", file=sys.stderr)
        else:
            raise RuntimeError(f"building {image} failed three times")
        sh("docker", "push", "-q", image)

    def ids(self):
        return set(sh("docker", "compose", "ps", "-aq", cwd=self.dir).stdout.split())

    def configured(self, *args):
        return self.clusterup("--config", str(self.dir.parent / "clusterup.yaml"), *args)

    def clusterup(self, *args):
        return subprocess.run([str(BIN), "--state-dir", str(self.state), *args], cwd=self.dir, capture_output=True, text=True)

    def down(self):
        down = sh("docker", "compose", "down", "-t", "1", cwd=self.dir, check=False)
        if down.returncode != 0:
            # Seen with 200 containers going at once on a loaded engine: a
            # network "has active endpoints" with none attached (Docker
            # 20.10 miscounts them until it restarts).
            print(f"warning: {self.name}: compose down: {down.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        for img in self.images:
            sh("docker", "image", "rm", img, check=False)
        shutil.rmtree(self.dir.parent, ignore_errors=True)


def heads(images):
    """The floor of a check: every manifest HEAD, 8 in flight over kept-alive
    connections from this process (no process per request)."""
    import http.client
    import threading
    local = threading.local()

    def head(image):
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(REGISTRY, timeout=10)
        repo, tag = image.split("/", 1)[1].rsplit(":", 1)
        local.conn.request("HEAD", f"/v2/{repo}/manifests/{tag}",
                           headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        response = local.conn.getresponse()
        response.read()
        assert response.status == 200, (image, response.status)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(head, images))


def curl_heads(images):
    """The issue's floor: one curl process sending every manifest HEAD, 8 in
    parallel."""
    urls = []
    for image in images:
        repo, tag = image.split("/", 1)[1].rsplit(":", 1)
        urls.append(f"http://{REGISTRY}/v2/{repo}/manifests/{tag}")
    sh("curl", "-sSf", "-I", "-o", "/dev/null", "--parallel", "--parallel-immediate", "--parallel-max", "8",
       "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json", *urls)


CUP = os.environ.get("CUP", "")


def engine_proxy(path):
    """A socket in front of the engine's that says API 1.41 where a client
    asks for a newer one: cup speaks 1.44, this machine's engine (20.10)
    at most 1.41. The hop costs cup a little on each engine request."""
    import socket
    import threading
    engine = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1024)

    def pipe(src, dst, rewrite):
        try:
            while data := src.recv(65536):
                if rewrite:
                    data = data.replace(b" /v1.44/", b" /v1.41/")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        while True:
            client, _ = server.accept()
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(engine)
            except OSError:
                client.close()
                continue
            threading.Thread(target=pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client, False), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return path


def cup_ready(images, scratch):
    """cup (the Rust update checker) when CUP names its binary, set up to
    check exactly `images` against the local (plain HTTP) registry; None
    with the reason printed when it cannot run."""
    if not CUP or not os.access(CUP, os.X_OK):
        print("cup: skipped: set CUP to a cup binary built from github.com/sergi0g/cup "
              "(3.5.1, commit c58c2da6e8dd22a1de593fed938f6d58e9f78af2, features cli)", file=sys.stderr)
        return None
    config = scratch / "cup.json"
    socket = engine_proxy(scratch / "engine.sock")
    config.write_text(json.dumps({"version": 3, "socket": f"unix://{socket}", "registries": {REGISTRY: {"insecure": True}}}))
    cmd = [CUP, "-c", str(config), "check", "--raw", *images]
    first = subprocess.run(cmd, capture_output=True, text=True)
    if first.returncode != 0:
        print(f"cup: skipped: it failed: {first.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return lambda: sh(*cmd)


def peak_rss_mb(cmd, cwd):
    """Peak RSS of clusterup's own process (VmHWM, sampled until it exits),
    not of the `docker compose` children it runs."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(0.005)
    return peak / 1024


def structural(rows):
    """One service of 20 changes (an environment variable): clusterup
    recreates it alone; `down && up -d` recreates all."""
    stack = Stack(20, "s20")
    try:
        counter = iter(range(1, 1000))
        # The stability period is a wait clusterup adds on purpose; with 0s
        # what is left is the work itself, as `down && up -d` (which waits
        # for nothing) does it.
        plain = stack.dir.parent / "clusterup.yaml"
        no_wait = stack.dir.parent / "no-wait.yaml"
        no_wait.write_text(plain.read_text().replace("stability: 1s", "stability: 0s"))
        os.chmod(no_wait, 0o600)
        names = ["clusterup apply, stability 1s", "clusterup apply, stability 0s", "down && up -d"]
        recreated = {name: [] for name in names}

        def change_then(name, run):
            def fn():
                stack.write(next(counter))
                before = stack.ids()
                run()
                recreated[name].append(len(stack.ids() - before))
            return fn

        def clusterup(config):
            def run():
                r = stack.clusterup("--config", str(config), "apply", "--auto")
                assert r.returncode == 0, r.stdout + r.stderr
            return run

        def down_up():
            sh("docker", "compose", "down", "-t", "10", cwd=stack.dir)
            sh("docker", "compose", "up", "-d", cwd=stack.dir)

        runs = [clusterup(plain), clusterup(no_wait), down_up]
        m = median_of({name: change_then(name, run) for name, run in zip(names, runs)})
        base = m["down && up -d"]
        for name, secs in m.items():
            rows.append(("structural, 1 of 20", f"{name}: wall seconds", secs, secs / base))
            rows.append(("structural, 1 of 20", f"{name}: containers recreated", statistics.median(recreated[name]), statistics.median(recreated[name]) / 20))
    finally:
        stack.down()


PROBE = ("while :; do ip=$$(nslookup s0 127.0.0.11 | awk '/^Address: / {print $$2; exit}'); "
         "if timeout 2 wget -q -O /dev/null http://$$ip:8080/health; then echo ok; else echo FAIL; fi; usleep 10000; done")


def downtime(rows):
    """An image update of one web service while a probe inside the compose
    network asks it every 10 ms: failed requests and the longest time
    without a successful one, per update."""
    def compose(strategy):
        return lambda stack, _env: (
            "services:\n  s0:\n    image: " + stack.images[0] + "\n"
            "    labels: {clusterup.strategy: " + strategy + "}\n"
            "  probe:\n    image: clusterup-fixture/web:v1\n    labels: {clusterup.enable: 'false'}\n"
            "    healthcheck: {test: [CMD, /bin/true], interval: 1s}\n"
            '    command: [/bin/sh, -c, "' + PROBE + '"]\n')

    results = {}
    for variant in ["stop-first (clusterup)", "start-first (clusterup)", "docker compose up -d s0"]:
        strategy = "start-first" if variant.startswith("start") else "stop-first"
        stack = Stack(1, f"dt{len(results)}", compose=compose(strategy))
        try:
            fails, gaps = [], []
            for rep in range(REPS):
                Stack.publish(stack.images[0], "v2" if rep % 2 == 0 else "v1")
                since = sh("date", "-u", "+%Y-%m-%dT%H:%M:%S.%NZ").stdout.strip()
                if variant.startswith("docker"):
                    sh("docker", "compose", "pull", "-q", "s0", cwd=stack.dir)
                    sh("docker", "compose", "up", "-d", "--wait", "s0", cwd=stack.dir)
                else:
                    r = stack.configured("apply", "--auto")
                    assert r.returncode == 0, r.stdout + r.stderr
                time.sleep(2.5)  # requests in flight end (probe timeout 2 s)
                logs = sh("docker", "compose", "logs", "-t", "--no-log-prefix", "--since", since, "probe", cwd=stack.dir).stdout
                lines = [l.split(" ", 1) for l in logs.splitlines() if l.endswith((" ok", " FAIL"))]
                fails.append(sum(1 for _, word in lines if word == "FAIL"))
                stamps = [parse_ts(t) for t, word in lines if word == "ok"]
                gaps.append(max((b - a for a, b in zip(stamps, stamps[1:])), default=0.0))
            results[variant] = (statistics.median(fails), max(fails), statistics.median(gaps), max(gaps),
                                sum(1 for f in fails if f))
        finally:
            stack.down()
    base_fail = results["docker compose up -d s0"][0] or 1
    base_gap = results["docker compose up -d s0"][2] or 1
    for variant, (fail_med, fail_max, gap_med, gap_max, lossy) in results.items():
        rows.append(("downtime, image update", f"{variant}: updates losing a request", lossy, lossy / REPS))
        rows.append(("downtime, image update", f"{variant}: failed requests (median)", fail_med, fail_med / base_fail))
        rows.append(("downtime, image update", f"{variant}: failed requests (worst)", fail_max, fail_max / base_fail))
        rows.append(("downtime, image update", f"{variant}: longest gap s (median)", gap_med, gap_med / base_gap))
        rows.append(("downtime, image update", f"{variant}: longest gap s (worst)", gap_max, gap_max / base_gap))


def parse_ts(text):
    """Docker's RFC 3339 nanosecond timestamps, as seconds."""
    from datetime import datetime
    head, frac = text.rstrip("Z").split(".")
    return datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").timestamp() + float("0." + frac)


def check(rows, per_image):
    """One stack of n services: check with the kept compose model (files
    unchanged, P1) and with Compose asked (P1b), against the floors."""
    for n in SIZES:
        stack = Stack(n, n)
        try:
            assert stack.clusterup("check").returncode == 0, stack.clusterup("check").stderr
            misses = iter(range(1, 1_000_000))
            env = dict(os.environ)

            def asked():
                # Another environment is another key: Compose is asked,
                # the model it gives is the same.
                env["CLUSTERUP_BENCH_RUN"] = str(next(misses))
                subprocess.run([str(BIN), "--state-dir", str(stack.state), "check", "--only"], cwd=stack.dir,
                               capture_output=True, env=env)
            fns = {
                "clusterup check (files unchanged)": lambda: stack.clusterup("check", "--only"),
                "clusterup check (Compose asked)": asked,
                "floor: one curl, every HEAD": lambda: curl_heads(stack.images),
                "floor + compose config": lambda: (curl_heads(stack.images), sh("docker", "compose", "config", "-q", cwd=stack.dir)),
            }
            cup = cup_ready(stack.images, stack.dir.parent)
            if cup:
                fns["cup check"] = cup
            if n == 50:
                fns["skopeo inspect loop"] = lambda: [sh("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{i}") for i in stack.images]
                # Asks the registry about every image but pulls nothing (it
                # works offline against the local registry); it reports no
                # digests, so it only times the asking.
                fns["docker compose --dry-run pull"] = lambda: sh("docker", "compose", "--dry-run", "pull", "-q", cwd=stack.dir)
            m = median_of(fns)
            floor = m["floor: one curl, every HEAD"]
            case = f"check, {n} services"
            for name, secs in m.items():
                rows.append((case, name, secs, secs / floor))
            rows.append((case, "P1b: asked / (floor + compose config)", m["clusterup check (Compose asked)"],
                         m["clusterup check (Compose asked)"] / m["floor + compose config"]))
            if cup:
                rows.append((case, "P1: unchanged / cup", m["clusterup check (files unchanged)"],
                             m["clusterup check (files unchanged)"] / m["cup check"]))
            per_image[f"{n} services, 1 stack"] = (m["clusterup check (files unchanged)"] / n, floor / n)
            if n == 50:
                p1 = m["clusterup check (files unchanged)"]
                noop = median_of({"apply --auto (no-op)": lambda: stack.clusterup("apply", "--auto")})["apply --auto (no-op)"]
                rss = peak_rss_mb([str(BIN), "--state-dir", str(stack.state), "apply", "--auto"], stack.dir)
                rows.append(("no-op apply, 50 services", "P2: wall seconds / P1 (target <= 1.3)", noop, noop / p1))
                rows.append(("no-op apply, 50 services", "peak RSS MB (target <= 30)", rss, rss / 30))
        finally:
            stack.down()


def many_stacks(rows, per_image):
    """A host with k stacks of 5 services each (P6): one check of them all
    against one curl sending every HEAD."""
    for k in STACKS:
        # No network per stack: the engine's address pools run out near 30.
        offline = lambda stack, _env: "services:\n" + "".join(
            f"  s{i}:\n    image: {img}\n    network_mode: none\n    healthcheck: {{disable: true}}\n"
            for i, img in enumerate(stack.images))
        stacks = [Stack(5, f"m{k}x{i}", compose=offline) for i in range(k)]
        root = Path(tempfile.mkdtemp(prefix="clusterup-bench-many-"))
        try:
            config = root / "clusterup.yaml"
            config.write_text(f"state_dir: {root / 'state'}\nstacks:\n" + "".join(
                f"  - name: {s.name}\n    directory: {s.dir}\n" for s in stacks))
            os.chmod(config, 0o600)
            images = [i for s in stacks for i in s.images]

            def run():
                r = subprocess.run([str(BIN), "--config", str(config), "check", "--only"], capture_output=True, text=True)
                assert r.returncode == 0, r.stdout + r.stderr
            run()
            m = median_of({"clusterup check, every stack": run, "floor: one curl, every HEAD": lambda: curl_heads(images)})
            floor = m["floor: one curl, every HEAD"]
            for name, secs in m.items():
                rows.append((f"{k} stacks x 5 services", name, secs, secs / floor))
            per_image[f"5 services, {k} stacks"] = (m["clusterup check, every stack"] / len(images), floor / len(images))
        finally:
            for s in stacks:
                s.down()
            shutil.rmtree(root, ignore_errors=True)


SNAPSHOT_MB = int(os.environ.get("SNAPSHOT_MB", "1024"))


def snapshot(rows):
    """A volume of SNAPSHOT_MB of random data (it does not compress: the
    worst case for room, gzip's usual speed): an apply that recreates its
    service with and without `backup_volumes`, against the floor of the same
    copy by hand (`docker cp` of the mount through gzip -1, then sha256sum),
    and a restore against `tar -xzf` of the same snapshot."""
    compose = lambda stack, env: (
        f"services:\n  s0:\n    image: {stack.images[0]}\n    healthcheck: {{disable: true}}\n"
        f"    environment: {{BENCH: '{env}'}}\n    volumes: [data:/data]\nvolumes:\n  data: {{}}\n")
    stack = Stack(1, "snap", compose=compose, extra="    keep_volume_snapshots: 1\n")
    try:
        volume = f"{stack.name}_data"
        sh("docker", "run", "--rm", "-v", f"{volume}:/data", "clusterup-fixture/web:v1", "dd", "if=/dev/urandom",
           "of=/data/noise", "bs=1048576", f"count={SNAPSHOT_MB}")
        plain = stack.dir.parent / "clusterup.yaml"
        backed = stack.dir.parent / "backed.yaml"
        backed.write_text(plain.read_text() + "    backup_volumes: true\n")
        os.chmod(backed, 0o600)
        counter = iter(range(1, 1000))
        scratch = Path(tempfile.mkdtemp(prefix="clusterup-bench-copy-"))

        def apply(config):
            def fn():
                stack.write(next(counter))
                r = stack.clusterup("--config", str(config), "apply", "--auto")
                assert r.returncode == 0, r.stdout + r.stderr
            return fn

        def by_hand():
            container = sh("docker", "compose", "ps", "-q", "s0", cwd=stack.dir).stdout.strip()
            out = scratch / "data.tar.gz"
            subprocess.run(f"docker cp {container}:/data - | gzip -1 > {out} && sha256sum {out} > /dev/null",
                           shell=True, check=True)

        m = median_of({"with": apply(backed), "without": apply(plain), "floor": by_hand})
        gb = SNAPSHOT_MB / 1024
        cost = m["with"] - m["without"]
        rows.append((f"snapshot, {SNAPSHOT_MB} MB", "apply with backup_volumes: wall seconds", m["with"], m["with"] / m["without"]))
        rows.append((f"snapshot, {SNAPSHOT_MB} MB", "apply without: wall seconds", m["without"], 1.0))
        rows.append((f"snapshot, {SNAPSHOT_MB} MB", "docker cp | gzip -1; sha256sum (floor)", m["floor"], 1.0))
        rows.append((f"snapshot, {SNAPSHOT_MB} MB", "snapshot cost per GB (with - without)", cost / gb, cost / m["floor"]))

        revision = max(int(p.name[4:]) for p in (stack.state / stack.name / "volumes").glob("rev-*"))
        snap = next((stack.state / stack.name / "volumes" / f"rev-{revision}").glob("*.tar.gz"))
        copy = json.loads((snap.parent / "manifest.json").read_text())["volumes"][0]["seconds"]
        rows.append((f"snapshot, {SNAPSHOT_MB} MB", "of which the service is stopped (last copy)", copy, copy / m["floor"]))

        def restore():
            r = stack.configured("rollback", "--to", str(revision), "--restore-volumes", "--yes")
            assert r.returncode == 0, r.stdout + r.stderr

        def untar():
            out = scratch / "untar"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            sh("tar", "-xzf", str(snap), "-C", str(out))

        m = median_of({"restore": restore, "untar": untar})
        rows.append((f"restore, {SNAPSHOT_MB} MB", "rollback --restore-volumes: wall seconds", m["restore"], m["restore"] / m["untar"]))
        rows.append((f"restore, {SNAPSHOT_MB} MB", "tar -xzf of the snapshot (floor)", m["untar"], 1.0))
        shutil.rmtree(scratch, ignore_errors=True)
    finally:
        stack.down()
        sh("docker", "volume", "rm", f"{stack.name}_data", check=False)


def main():
    rows = []
    cases = os.environ.get("CASES", "check stacks structural downtime").split()
    if "structural" in cases:
        structural(rows)
    if "snapshot" in cases:
        snapshot(rows)
    if "downtime" in cases:
        downtime(rows)
    per_image = {}
    if "check" in cases:
        check(rows, per_image)
    if "stacks" in cases:
        many_stacks(rows, per_image)
    if per_image:
        first = next(iter(per_image.values()))[0]
        for what, (secs, floor) in per_image.items():
            rows.append(("growth: ms per image", f"{what} (floor {floor * 1000:.2f})", secs * 1000, secs / first))

    print(f"{'case':<28} {'measure':<46} {'median':>10} {'ratio':>7}")
    for case, name, secs, ratio in rows:
        print(f"{case:<28} {name:<46} {secs:>10.3f} {ratio:>7.2f}")
    json.dump([dict(case=c, measure=m, median=s, ratio=r) for c, m, s, r in rows], sys.stderr)


if __name__ == "__main__":
    main()
