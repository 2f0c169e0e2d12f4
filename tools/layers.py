#!/usr/bin/env python3
"""Checks that the service's top-level modules form no cycle (docs/design.md §8).

Reads every `crate::<module>` path in the code (not the comments) of src/<module>/ and
src/<module>.rs, tests included (a test module that reached up a layer would hide a
cycle just the same), prints each
module's dependencies and exits non-zero when one module reaches another that reaches it
back, directly or through others.

    python3 tools/layers.py
"""

import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
ROOT_FILES = {"lib", "main"}


def modules():
    found = {}
    for path in SRC.iterdir():
        name = path.stem
        if name in ROOT_FILES:
            continue
        files = list(path.rglob("*.rs")) if path.is_dir() else [path]
        found.setdefault(name, []).extend(files)
    return found


def dependencies(files, names, own):
    deps = set()
    for path in files:
        # Comments may name any module (doc links); only code depends on one.
        text = "\n".join(
            line for line in path.read_text().splitlines()
            if not line.lstrip().startswith("//")
        )
        for match in re.finditer(r"\bcrate::(\w+)", text):
            deps.add(match.group(1))
        # `use crate::{a, b::c}` groups
        for group in re.finditer(r"\bcrate::\{([^}]*)\}", text):
            for item in group.group(1).split(","):
                deps.add(item.strip().split("::")[0])
    return sorted(d for d in deps if d in names and d != own)


def cycle(graph):
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in graph[node]:
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def main():
    found = modules()
    graph = {name: dependencies(files, found, name) for name, files in found.items()}
    for name in sorted(graph):
        print(f"{name:10} uses {', '.join(graph[name]) or '-'}")
    loop = cycle(graph)
    if loop:
        print("cycle: " + " -> ".join(loop))
        return 1
    print("no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
