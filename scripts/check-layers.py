#!/usr/bin/env python3
"""Checks the crate's module graph: no import cycle, and every dependency points down
the layers written in LAYERS below (a module may use its own layer or a lower one).

Reads every `crate::a::b` path in src/ (outside `#[cfg(test)]` modules, whose
dependencies are the test's, not the module's) and builds two graphs: one between the
top-level modules, one between the sibling files of each folder (`super::x` paths
included). Prints the graph and exits 1 on a cycle or a dependency that points up.

Usage: scripts/check-layers.py [SRC_DIR]
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

# Lowest first. A module may depend on modules of its own layer or of a lower one.
LAYERS = [
    ("vocabulary", {"core", "secret", "proto"}),
    ("domain", {"scope", "budget", "upload", "expiry", "arn", "policy", "caller", "rules", "metrics"}),
    ("adapters", {"sign", "store", "sts", "credentials", "identity", "readiness", "aws", "codec"}),
    ("pipeline", {"grant"}),
    ("front doors", {"service", "gateway"}),
    ("wiring", {"config", "telemetry", "server", "cli", "fuzzing"}),
]
RANK = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}

PATH = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)
SUPER = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+\w+\s*\{", re.S)


def strip_tests(text):
    """Removes `#[cfg(test)] mod x { ... }` blocks (brace-matched)."""
    out, pos = [], 0
    for m in TEST_MOD.finditer(text):
        if m.start() < pos:
            continue
        out.append(text[pos : m.start()])
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        pos = i
    out.append(text[pos:])
    return "".join(out)


def strip_comments(text):
    return re.sub(r"//[^\n]*", "", text)


def module_of(src, path):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def find_cycles(graph):
    """Tarjan's strongly connected components; returns those with more than one node."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    top = defaultdict(set)
    siblings = defaultdict(lambda: defaultdict(set))  # folder -> file -> files
    files = sorted(p for p in src.rglob("*.rs") if p.name != "main.rs")
    for path in files:
        parts = module_of(src, path)
        if not parts:
            continue
        text = strip_comments(strip_tests(path.read_text()))
        targets = [m.group(1).split("::") for m in PATH.finditer(text)]
        for group in USE_GROUP.finditer(text):
            for item in re.findall(r"(?:^|[,{]\s*)([a-z_][a-z0-9_]*)", group.group(1)):
                targets.append([item])
        for t in targets:
            if t[0] != parts[0]:
                top[parts[0]].add(t[0])
            elif len(parts) > 1 and len(t) > 1 and t[1] != parts[1]:
                siblings[parts[0]][parts[1]].add(t[1])
        if len(parts) > 1:
            for name in SUPER.findall(text):
                if name != parts[-1] and (path.parent / f"{name}.rs").exists() or (
                    path.parent / name
                ).is_dir():
                    siblings["::".join(parts[:-1])][parts[-1]].add(name)
        top.setdefault(parts[0], set())

    failed = False
    print("module graph (top level):")
    for m in sorted(top, key=lambda m: (RANK.get(m, -1), m)):
        layer = LAYERS[RANK[m]][0] if m in RANK else "?"
        print(f"  {m:12} [{layer}] -> {', '.join(sorted(top[m])) or '-'}")
    for m in sorted(top):
        if m not in RANK:
            print(f"error: module '{m}' has no layer in scripts/check-layers.py")
            failed = True
            continue
        for d in sorted(top[m]):
            if d in RANK and RANK[d] > RANK[m]:
                print(
                    f"error: {m} ({LAYERS[RANK[m]][0]}) uses {d} ({LAYERS[RANK[d]][0]}): "
                    "dependencies must point down the layers"
                )
                failed = True
    for cycle in find_cycles(top):
        print(f"error: import cycle among {' -> '.join(cycle)}")
        failed = True
    for folder, graph in sorted(siblings.items()):
        for cycle in find_cycles(graph):
            print(f"error: import cycle in {folder}/ among {' -> '.join(cycle)}")
            failed = True
    if failed:
        return 1
    print(f"no import cycle; every dependency points down ({len(files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
