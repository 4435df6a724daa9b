"""Benchmarks of clusterup on this machine (see run.sh).

Each case runs its commands interleaved, after a warm-up, REPS times, and
reports medians, so a noisy shared machine affects all sides alike."""

import json
import os
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

    def __init__(self, n, tag):
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
        services = "".join(
            f"  s{i}:\n    image: {img}\n    healthcheck: {{disable: true}}\n" for i, img in enumerate(self.images)
        )
        (self.dir / "compose.yaml").write_text(f"services:\n{services}")
        sh("docker", "compose", "up", "-d", "--quiet-pull", cwd=self.dir)

    @staticmethod
    def publish(image):
        sh("docker", "tag", "clusterup-fixture/web:v1", image)
        sh("docker", "push", "-q", image)

    def clusterup(self, *args):
        return subprocess.run([str(BIN), "--state-dir", str(self.state), *args], cwd=self.dir, capture_output=True, text=True)

    def down(self):
        sh("docker", "compose", "down", "-t", "1", cwd=self.dir, check=False)
        for img in self.images:
            sh("docker", "image", "rm", img, check=False)


def heads(images):
    """The floor of a check: every manifest HEAD at once, and one compose config."""
    def head(image):
        repo, tag = image.split("/", 1)[1].rsplit(":", 1)
        sh("curl", "-sfI", "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json",
           f"http://{REGISTRY}/v2/{repo}/manifests/{tag}")
    with ThreadPoolExecutor(len(images)) as pool:
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


def main():
    rows = []
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
