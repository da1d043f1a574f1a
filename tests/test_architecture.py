"""The layering of docs/architecture.md holds: no import loop, no import into a higher layer or
between two units of one layer, and our own modules imported at the top of modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each installed package's source lives (usermirrorer.preprocessing is mapped, pyproject.toml).
SOURCES = {"usermirrorer": REPO / "usermirrorer", "usermirrorer.preprocessing": REPO / "preprocessing"}
MAX_FUNCTION_LOCAL_IMPORTS = 25


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in SOURCES.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if name.startswith("usermirrorer.preprocessing") and package == "usermirrorer":
                continue  # not a source folder of the package (kept out by the mapping)
            found[name] = path
    return found


MODULES = _modules()


def _layers() -> list[tuple[int, str, list[str]]]:
    """(rank, unit, module patterns) rows of the table in docs/architecture.md."""
    rows = []
    for line in (REPO / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1], re.findall(r"`(usermirrorer[\w.*]*)`", cells[2])))
    return rows


def _unit_of(module: str, layers) -> tuple[int, str]:
    best = None
    for rank, unit, patterns in layers:
        for pattern in patterns:
            if "*" in pattern:
                ok = re.fullmatch(pattern.replace(".", r"\.").replace("*", r"\w+"), module) is not None
                length = len(pattern)
            elif unit == "data ground":  # its own modules only, not the subpackages
                ok = module == pattern or (module.startswith(pattern + ".") and module.count(".") == 2
                                           and module not in (pattern + ".sampling", pattern + ".training"))
                length = len(pattern)
            else:
                ok = module == pattern or module.startswith(pattern + ".")
                length = len(pattern)
            if ok and (best is None or length > best[0]):
                best = (length, rank, unit)
    if best is None:
        raise AssertionError(f"{module} is in no layer of docs/architecture.md; add it to the table")
    return best[1], best[2]


def _imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for each import of our own package.

    Imports under ``if TYPE_CHECKING:`` are skipped: they never run.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: list[tuple[str, int, bool]] = []

    def target(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("usermirrorer"):
                        out.append((alias.name, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                module = target(child)
                if module.startswith("usermirrorer"):
                    for alias in child.names:  # ``from pkg import submodule`` imports the submodule
                        sub = f"{module}.{alias.name}"
                        out.append((sub if sub in MODULES else module, child.lineno, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


EDGES = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_is_in_a_layer():
    layers = _layers()
    assert len(layers) >= 9
    for name in MODULES:
        _unit_of(name, layers)


def test_imports_go_only_downward():
    layers = _layers()
    wrong = []
    for name, edges in EDGES.items():
        rank, unit = _unit_of(name, layers)
        for target, line, _ in edges:
            if target not in MODULES:
                wrong.append(f"{MODULES[name]}:{line}: imports {target}, which does not exist")
                continue
            t_rank, t_unit = _unit_of(target, layers)
            if t_unit == unit or t_rank < rank:
                continue
            where = "a higher layer" if t_rank > rank else "another unit of its layer"
            wrong.append(f"{MODULES[name].relative_to(REPO)}:{line}: {name} ({unit}, {rank}) imports "
                         f"{target} ({t_unit}, {t_rank}): {where}")
    assert not wrong, "\n".join(wrong)


def test_no_import_loops():
    graph = {name: sorted({t for t, _, _ in edges if t in MODULES and t != name}) for name, edges in EDGES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert not loops, f"import loops: {loops}"


def test_own_modules_are_imported_at_the_top():
    # one per import statement (``from x import a, b`` is one)
    local = sorted({f"{MODULES[name].relative_to(REPO)}:{line}: {target}"
                    for name, edges in EDGES.items() for target, line, inside in edges if inside})
    assert len(local) <= MAX_FUNCTION_LOCAL_IMPORTS, (
        f"{len(local)} function-local imports of our own package (at most {MAX_FUNCTION_LOCAL_IMPORTS}):\n"
        + "\n".join(local))


@pytest.mark.parametrize("checker", [test_imports_go_only_downward, test_no_import_loops])
def test_the_checks_catch_a_bad_import(checker, monkeypatch):
    """The checks are not vacuous: an upward import and a loop are both reported."""
    edges = dict(EDGES)
    edges["usermirrorer.data_pipeline.raw"] = [*EDGES["usermirrorer.data_pipeline.raw"],
                                               ("usermirrorer.sim.simulator", 1, False)]
    edges["usermirrorer.sim.simulator"] = [*EDGES["usermirrorer.sim.simulator"],
                                           ("usermirrorer.data_pipeline.raw", 1, False)]
    monkeypatch.setitem(globals(), "EDGES", edges)
    with pytest.raises(AssertionError):
        checker()
