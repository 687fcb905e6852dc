"""Module sizes and import cycles of the reslab package (issue 16's before/after measure).

    python benchmarks/layout.py [--results benchmarks/results/layout.md]

Counts every `from reslab... import` / `import reslab...`, at module level or inside a function
(a deferred import still ties two modules together), and lists the cycles among them.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "reslab"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The reslab modules `path` imports (a `from reslab import x` counts x when x is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reslab"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or ({node.module} & modules)
    return found - {module_name(path)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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


def measure() -> tuple[list[tuple[str, int]], list[list[str]], dict[str, set[str]]]:
    files = sorted(p for p in SRC.rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports(p, modules) for p in files}
    sizes = [(module_name(p), len(p.read_text().splitlines())) for p in files]
    return sizes, cycles(graph), graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", help="also write this markdown file")
    args = ap.parse_args()
    sizes, found, graph = measure()
    lines = ["| module | lines | imports from reslab |", "|---|---:|---|"]
    lines += [f"| {m} | {n} | {', '.join(sorted(graph[m])) or '-'} |" for m, n in sorted(sizes, key=lambda s: -s[1])]
    lines += ["", f"{len(sizes)} modules, {sum(n for _, n in sizes)} lines; largest {max(n for _, n in sizes)} lines."]
    lines += [f"Import cycles: {len(found)}" + "".join(f"\n- {' <-> '.join(c)}" for c in found)]
    text = "\n".join(lines)
    print(text)
    if args.results:
        Path(args.results).write_text(text + "\n")


if __name__ == "__main__":
    main()
