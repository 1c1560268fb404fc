#!/usr/bin/env python3
"""Lists the `use crate::…` edges between the modules of each crate and fails on a cycle.

A module is a file (`a/b.rs` and `a/b/mod.rs` are `a::b`); an edge `a -> b` means a file
of module `a` names `crate::b…` (also inside a `crate::{…}` group) or, from a sibling,
`super::b…` (outside its tests and comments). A child naming its parent, or a
parent its child, is not an edge: they are one module tree. Run from the workspace root:
`python3 scripts/module-cycles.py [--list]`.
"""
import os, re, sys

CRATES = {}
for line in open("Cargo.toml"):
    m = re.match(r'\s*members\s*=\s*\[(.*)\]', line)
    if m:
        CRATES = [c.strip().strip('"') for c in m.group(1).split(",") if c.strip()]

def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"

def top(module, depth):
    return "::".join(module.split("::")[:depth]) if module != "crate" else module

failed = False
for crate in CRATES:
    src = os.path.join(crate, "src")
    if not os.path.isdir(src):
        continue
    edges = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs") or f.endswith("_tests.rs") or f == "proptests.rs":
                continue
            path = os.path.join(dirpath, f)
            text = open(path).read()
            cut = text.find("#[cfg(test)]\nmod tests")
            if cut >= 0:
                text = text[:cut]
            # Doc links and comments are not imports.
            text = "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))
            here = module_of(src, path)
            parent = "::".join(here.split("::")[:-1]) if here != "crate" else ""
            # `super::x` names a sibling of this module: the same as `crate::<parent>::x`.
            text = re.sub(
                r'\bsuper::(?!super)',
                ("crate::" + parent + "::") if parent else "crate::",
                text,
            )
            # `crate::a::{b, c::d}` names `crate::a::b` and `crate::a::c::d`.
            def expand(m):
                prefix, group = m.group(1), m.group(2)
                items = [i.strip() for i in group.split(",") if i.strip()]
                return " ".join("crate::" + prefix + i for i in items)
            for _ in range(3):
                text = re.sub(r'crate::((?:[a-z_][a-z0-9_]*::)*)\{([^{}]*)\}', expand, text)
            for m in re.finditer(r'crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)', text):
                target = m.group(1)
                # The module part: drop a trailing item (lower-case names are modules or
                # functions; keep every segment that names an existing module).
                segs = target.split("::")
                mod = []
                for s in segs:
                    cand = os.path.join(src, *mod, s)
                    if os.path.isfile(cand + ".rs") or os.path.isdir(cand):
                        mod.append(s)
                    else:
                        break
                if not mod:
                    continue
                there = "::".join(mod)
                # Compare siblings: the first differing level of both paths.
                a, b = here.split("::") if here != "crate" else [], mod
                i = 0
                while i < len(a) and i < len(b) and a[i] == b[i]:
                    i += 1
                if i == len(a) or i == len(b):
                    continue  # parent and child
                x, y = "::".join(a[: i + 1]), "::".join(b[: i + 1])
                edges.setdefault(x, set()).add(y)
    if "--list" in sys.argv:
        print(f"{crate}:")
        for x in sorted(edges):
            print(f"  {x} -> {', '.join(sorted(edges[x]))}")
    # Cycle search.
    state = {}
    stack = []
    def visit(n):
        global failed
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                print(f"{crate}: import cycle: {' -> '.join(stack[stack.index(m):] + [m])}")
                failed = True
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2
    for n in sorted(edges):
        if n not in state:
            visit(n)
sys.exit(1 if failed else 0)
