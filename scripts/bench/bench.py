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
        sh("docker", "tag", f"clusterup-fixture/web:{fixture}", image)
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
    connections from this process (no process per request), and one compose
    config."""
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


def main():
    rows = []
    cases = os.environ.get("CASES", "check structural downtime").split()
    if "structural" in cases:
        structural(rows)
    if "downtime" in cases:
        downtime(rows)
    if "check" not in cases:
        SIZES.clear()
    checks = {}
    for n in SIZES:
        stack = Stack(n, n)
        try:
            assert stack.clusterup("check").returncode == 0, stack.clusterup("check").stderr
            fns = {
                "clusterup check": lambda: stack.clusterup("check", "--only"),
                "floor (HEADs + compose config)": lambda: (heads(stack.images), sh("docker", "compose", "config", "-q", cwd=stack.dir)),
            }
            if n == 50:
                fns["skopeo inspect loop"] = lambda: [sh("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{i}") for i in stack.images]
                # Asks the registry about every image but pulls nothing (it
                # works offline against the local registry); it reports no
                # digests, so it only times the asking.
                fns["docker compose --dry-run pull"] = lambda: sh("docker", "compose", "--dry-run", "pull", "-q", cwd=stack.dir)
            m = median_of(fns)
            checks[n] = m["clusterup check"]
            floor = m["floor (HEADs + compose config)"]
            for name, secs in m.items():
                rows.append((f"check, {n} services", name, secs, secs / floor))
            if n == 50:
                noop = median_of({"apply --auto (no-op)": lambda: stack.clusterup("apply", "--auto")})["apply --auto (no-op)"]
                rss = peak_rss_mb([str(BIN), "--state-dir", str(stack.state), "apply", "--auto"], stack.dir)
                rows.append(("no-op apply, 50 services", "wall seconds (target <= 0.25)", noop, noop / 0.25))
                rows.append(("no-op apply, 50 services", "peak RSS MB (target <= 30)", rss, rss / 30))
        finally:
            stack.down()
    if len(checks) > 1:
        smallest = min(checks)
        for n, secs in sorted(checks.items()):
            rows.append(("check growth", f"{n} services vs {smallest}", secs, secs / checks[smallest]))

    print(f"{'case':<28} {'measure':<40} {'median':>10} {'ratio':>7}")
    for case, name, secs, ratio in rows:
        print(f"{case:<28} {name:<40} {secs:>10.3f} {ratio:>7.2f}")
    json.dump([dict(case=c, measure=m, median=s, ratio=r) for c, m, s, r in rows], sys.stderr)


if __name__ == "__main__":
    main()
