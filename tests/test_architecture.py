"""The package's import graph: no circles, and imports only go down the layers of CONTRIBUTING.md.

Every ``import essl...`` / ``from essl... import`` in ``essl/`` counts, function-local ones included (a
``TYPE_CHECKING`` block does not: it is never run). Run ``python tests/test_architecture.py`` for the figures.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "essl"

#: Layers, lowest first; a module may import its own layer and the layers below it. The photonics physics core
#: (``essl/photonics``: cells, symmetry, solver, DOS, h5 files, generation, labelling) stands apart: it imports
#: only the ground floor, and the ground floor does not import it.
LAYERS = ("ground", "photonics-physics", "data", "training", "evaluation", "experiments", "cli")
GROUND = ("essl", "essl.catalog", "essl.errors", "essl.extras", "essl.runtime")
GROUND_PACKAGES = ("objectives", "groups", "models", "augmentation")


def layer_of(module: str) -> str:
    parts = module.split(".")
    if module in ("essl.cli", "essl.__main__") or parts[-1] == "commands":
        return "cli"
    if module in GROUND or parts[1] in GROUND_PACKAGES:
        return "ground"
    if parts[1] == "photonics":
        return "photonics-physics"
    if module == "essl.runs":
        return "training"
    if parts[1] in ("data", "training", "evaluation", "experiments"):
        return parts[1]
    if module == "essl.export":  # export and load a trained backbone: built on evaluation's loaders
        return "experiments"
    raise AssertionError(f"{module}: no layer assigned in tests/test_architecture.py (add it to layer_of)")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str, known: set[str]) -> str | None:
    """The essl module an imported name lives in (``essl.data.load_dataset`` -> ``essl.data``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, bool]]:
    """``{module: {imported essl module: imported at the top level}}`` of every module under ``package``."""
    files = {module_name(p): p for p in sorted(package.rglob("*.py"))}
    known = set(files)
    graph: dict[str, dict[str, bool]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        top = {id(n) for n in tree.body}
        top |= {id(c) for n in tree.body if isinstance(n, ast.Try) for c in n.body}
        edges: dict[str, bool] = {}
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for name in names:
                if not name.startswith("essl"):
                    continue
                target = _resolve(name, known)
                if target and target != mod:
                    edges[target] = edges.get(target, False) or id(node) in top
        # a ``from essl.x import y`` also names essl.x.y; keep the deepest module only
        graph[mod] = edges
    return graph


def circles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_edge(a: str, b: str) -> bool:
    """``essl.x`` importing ``essl.x.y`` (a package's ``__init__`` re-exporting its own modules) is no circle."""
    return b.startswith(a + ".")


def upward_imports(graph: dict[str, dict[str, bool]]) -> list[tuple[str, str]]:
    """Imports from a lower layer into a higher one (and into the photonics physics core from outside)."""
    bad = []
    for a, edges in graph.items():
        for b, top in edges.items():
            if a == "essl" and not top:
                continue  # the package's lazy facade (``essl.load_backbone``) imports on first use, not on import
            la, lb = LAYERS.index(layer_of(a)), LAYERS.index(layer_of(b))
            if layer_of(b) == "photonics-physics" and layer_of(a) == "ground":
                bad.append((a, b))
            elif layer_of(a) == "photonics-physics" and layer_of(b) != "photonics-physics" and lb > 0:
                bad.append((a, b))
            elif lb > la and not _package_edge(a, b):
                bad.append((a, b))
    return sorted(bad)


def function_local_imports(graph: dict[str, dict[str, bool]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, edges in graph.items() for b, top in edges.items() if not top)


def test_no_import_circles():
    graph = {a: {b: t for b, t in e.items() if not _package_edge(a, b)} for a, e in import_graph().items()}
    assert circles(graph) == []


def test_no_upward_imports():
    assert upward_imports(import_graph()) == []


def test_every_module_has_a_layer():
    for mod in import_graph():
        layer_of(mod)


if __name__ == "__main__":
    package = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PACKAGE
    ROOT = package.parent
    g = import_graph(package)
    plain = {a: {b: t for b, t in e.items() if not _package_edge(a, b)} for a, e in g.items()}
    cs = circles(plain)
    up = upward_imports(g)
    local = function_local_imports(g)
    print(f"modules {len(g)}, essl import edges {sum(map(len, g.values()))}, function-local {len(local)}")
    print(f"circles {len(cs)}: {cs}")
    print(f"upward imports {len(up)}:")
    for a, b in up:
        print(f"  {a} ({layer_of(a)}) -> {b} ({layer_of(b)})")


# ------------------------------------------------------------------------------------------------ citations
#: Paths inside this repository that its text may name (checked to exist); anything under reference/ is a note
#: that is not part of the repository and may never be cited.
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:essl|docs|tests|benchmarks|examples|\.ci)/[\w./*-]*\w"
    r"|(?:README|BENCHMARKS|CONTRIBUTING)\.md)"
)
NOTE = re.compile(r"reference/\w+\.md")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".toml", ".sh", ".txt", ".cfg"}


def repository_text_files() -> list[Path]:
    skip = {".git", ".venv", "runs", "build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
    files = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in skip or part.endswith(".egg-info") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in ("run", "run.sh"):
            files.append(path)
    return files


def dangling_citations() -> list[str]:
    """``file:line: cited`` for every cited note outside the repository and every named repository path that
    does not exist."""
    out = []
    for path in repository_text_files():
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{n}"
            out += [f"{where}: {m.group(0)}" for m in NOTE.finditer(line)]
            for m in REPO_PATH.finditer(line):
                cited = m.group(1).rstrip(".")
                if "<" in cited or "{" in cited:
                    continue
                if not (list(ROOT.glob(cited)) if "*" in cited else (ROOT / cited).exists()):
                    out.append(f"{where}: {cited}")
    return out


def test_nothing_cites_a_file_that_is_not_in_the_repository():
    assert dangling_citations() == []
