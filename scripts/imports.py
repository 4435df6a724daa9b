#!/usr/bin/env python3
"""The import graph of clusterup's modules: which top-level module uses
which (through `use crate::x` or a `crate::x::` path), circles between
them, and imports that run back up the layers.

    scripts/imports.py            # the graph, circles, upward imports
    scripts/imports.py --check    # exit 1 if there is a circle or an upward import

Layers, top to bottom; a module may use those below it, never above:
"""
import re
import sys
from pathlib import Path

LAYERS = [
    ["main", "docs", "fuzz"],
    ["commands", "cli"],
    ["serve"],
    ["notify", "metrics"],
    ["ops"],
    ["apply"],
    ["report", "state"],
    ["plan"],
    ["labels", "settings", "window", "output"],
    ["seams"],
    ["signals", "redact", "trust", "reference", "exit", "clock", "files", "at_once"],
]
__doc__ += "\n".join("    " + " ".join(layer) for layer in LAYERS) + "\n"

SRC = Path(__file__).resolve().parent.parent / "src"
USE = re.compile(r"\bcrate::(\w+)")


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def graph():
    edges = {}
    for path in sorted(SRC.rglob("*.rs")):
        text = path.read_text()
        # Tests may reach anywhere: only the code counts.
        text = re.split(r"\n#\[cfg\(test\)\]\nmod tests", text)[0]
        here = module_of(path)
        for used in USE.findall(text):
            if used != here:
                edges.setdefault(here, {}).setdefault(used, set()).add(str(path.relative_to(SRC)))
    return edges


def layer_of(module):
    for i, layer in enumerate(LAYERS):
        if module in layer:
            return i
    return None


def circles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    for module in sorted(edges):
        print(f"{module} -> {', '.join(sorted(edges[module]))}")
    found = circles(edges)
    upward = []
    unknown = set()
    for a, uses in edges.items():
        for b, files in uses.items():
            la, lb = layer_of(a), layer_of(b)
            if la is None or lb is None:
                unknown |= {m for m, l in ((a, la), (b, lb)) if l is None}
                continue
            if lb < la:
                upward.append(f"{a} -> {b} ({', '.join(sorted(files))})")
    print(f"\ncircles: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(c))
    print(f"imports running back up: {len(upward)}")
    for u in upward:
        print("  " + u)
    if unknown:
        print(f"modules in no layer: {', '.join(sorted(unknown))}")
    if "--check" in sys.argv and (found or upward or unknown):
        sys.exit(1)


if __name__ == "__main__":
    main()
