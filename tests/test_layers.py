"""The package's shape: no import cycle (imports inside functions count), small files and functions,
the pipeline's private members private, every config field and method parameter documented."""
import ast
import dataclasses
from pathlib import Path

import pytest

import prefdistill

PACKAGE = Path(prefdistill.__file__).parent
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in its body (functions included)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in mods), None)

    graph = {m: set() for m in mods}
    for m, path in mods.items():
        package = m if path.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [resolve(f"{base}.{a.name}") or resolve(base) for a in node.names]
            else:
                continue
            graph[m] |= {t for t in targets if t and t != m}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_walker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


# The architecture, bottom up: a module imports only modules of its own layer or below (longest prefix wins).
LAYERS = {
    "prefdistill.errors": 0, "prefdistill.io": 0, "prefdistill.progress": 0, "prefdistill.config.typed": 0,
    "prefdistill.config": 1, "prefdistill.bench.plan": 1,  # the schema; the bench's grid as data
    "prefdistill.models": 2, "prefdistill.run.folder": 2, "prefdistill.losses": 2, "prefdistill.evaluation.metrics": 2, "prefdistill.evaluation.bootstrap": 2,
    "prefdistill.evaluation.paired": 2,
    "prefdistill.evaluation.calibration": 2,
    "prefdistill.data": 3, "prefdistill.signal": 3, "prefdistill.judges": 3,
    "prefdistill.methods": 4,
    "prefdistill.training": 5,
    "prefdistill.evaluation": 6, "prefdistill.reporting": 6, "prefdistill.config.checks": 6,
    "prefdistill.run": 7, "prefdistill.run.claims": 7,  # claims: who works on a unit now (stdlib only)
    "prefdistill.bench": 8, "prefdistill.bench.workers": 8, "prefdistill.bench.units": 8, "prefdistill.lab": 8,
    "prefdistill.cli": 9, "prefdistill.__main__": 9, "prefdistill": 9,
    "prefdistill.testing": 10,  # fixtures for tests/ and benchmarks/: it may import anything, nothing in the library imports it
}


def layer(module: str) -> int:
    parts = module.split(".")
    return next(LAYERS[".".join(parts[:i])] for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in LAYERS)


def test_the_layer_table_reads_the_longest_prefix():
    assert layer("prefdistill.config.checks") == 6 and layer("prefdistill.config.schema") == 1
    assert layer("prefdistill.bench.plan") == 1 and layer("prefdistill.bench.runner") == 8
    assert layer("prefdistill.run.folder") == 2 and layer("prefdistill.run.pipeline") == 7


def test_lower_layers_do_not_import_higher_ones():
    """errors / io / typed < the schema < models, losses, metric maths < data, signal, judges < methods < training <
    grading, reports, config checks < the run < bench, lab < the CLI < the test fixtures."""
    upward = [f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, deps in sorted(import_graph().items()) for d in sorted(deps)
              if layer(d) > layer(m)]
    assert not upward, upward


def private_imports(source: str) -> list[str]:
    """`from M import _name` and `import M._name` in `source`: another module's private names (dunders aside)."""
    private = lambda name: name.startswith("_") and not name.startswith("__")  # noqa: E731
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {a.name}" for a in node.names if private(a.name)]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if any(private(p) for p in a.name.split("."))]
    return found


def test_the_private_import_walker_finds_them():
    assert private_imports("from a.b import _x, y\nfrom . import _z as z\nimport a._c") == [
        "line 1: from a.b import _x", "line 2: from . import _z", "line 3: import a._c"]
    assert private_imports("from a import b as _b, __version__\nimport a.b") == []


def test_no_module_imports_another_modules_private_names():
    """What two modules share is public (reporting.common holds the reports' helpers), never `from m import _helper`."""
    found = [f"{m}: {x}" for m, path in sorted(modules().items()) for x in private_imports(path.read_text())]
    assert not found, found


BENCHMARKS = PACKAGE.parents[1] / "benchmarks"
TESTS = PACKAGE.parents[1] / "tests"


def reaches_tests(source: str, test_modules: set[str]) -> list[str]:
    """Where `source` imports from tests/: an import of `tests` or of one of `test_modules` (what tests/ holds, by
    name), or a sys.path / importlib call given a path that names "tests"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [f"line {node.lineno}: imports {n}" for n in names if n.split(".")[0] in test_modules | {"tests"}]
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            loads = called.startswith("sys.path.") or called.split(".")[-1] in ("spec_from_file_location", "SourceFileLoader",
                                                                                 "import_module", "run_path")
            strings = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            if loads and any("tests" in Path(s).parts for s in strings):
                found.append(f"line {node.lineno}: {called}(... tests ...)")
    return sorted(found, key=lambda x: int(x.split(":")[0].split()[1]))  # ast.walk goes breadth first: by line


def test_the_tests_walker_finds_imports_from_tests():
    source = ("import sys\nsys.path.insert(0, str(HERE.parent / 'tests'))\nfrom servers import FaultProxy\n"
              "spec = importlib.util.spec_from_file_location('m', ROOT / 'tests' / 'methods' / 'test_methods.py')\n"
              "import tests.conftest\nsys.path.insert(0, str(HERE))\nfrom prefdistill.testing import ROWS")
    assert reaches_tests(source, {"servers", "test_methods"}) == [
        "line 2: sys.path.insert(... tests ...)", "line 3: imports servers", "line 4: importlib.util.spec_from_file_location(... tests ...)",
        "line 5: imports tests.conftest"]


def test_benchmarks_do_not_import_from_tests():
    """The benchmark scripts take their fixtures from prefdistill.testing, never from tests/ (by import or by path)."""
    test_modules = {p.stem for p in TESTS.rglob("*.py")}
    found = [f"{path.name}: {x}" for path in sorted(BENCHMARKS.glob("*.py")) for x in reaches_tests(path.read_text(), test_modules)]
    assert not found, found


def test_the_top_level_holds_only_entry_points_and_leaves():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "cli", "errors", "io", "progress"], top


@pytest.mark.parametrize("path", sorted(modules().values()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_and_functions_stay_small(path):
    assert len(path.read_text().splitlines()) <= MAX_FILE_LINES
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES, f"{node.name}: {node.end_lineno - node.lineno + 1} lines"


def test_the_pipeline_only_orders_stages_and_gathers_metrics():
    """What a run made is read through `Artifacts`; the Pipeline holds no service of its own."""
    from prefdistill.run.pipeline import Pipeline

    members = {n for n in vars(Pipeline) if not n.startswith("__")}
    assert members == {"run", "finalize", "results", "gather"}, members


@pytest.mark.parametrize("owner", ["artifacts.Artifacts"])
def test_nothing_outside_the_artifacts_uses_their_private_members(owner):
    import importlib

    module, name = owner.split(".")
    cls = getattr(importlib.import_module(f"prefdistill.run.{module}"), name)
    source = Path(importlib.import_module(f"prefdistill.run.{module}").__file__)
    private = {n for n in vars(cls) if n.startswith("_") and not n.startswith("__")}
    private |= {n for n in _assigned_attributes(source) if n.startswith("_") and not n.startswith("__")}
    assert private, f"{owner} has no private members to look for: the check would pass vacuously"
    roots = [PACKAGE, PACKAGE.parents[1] / "tests", PACKAGE.parents[1] / "benchmarks"]
    for path in (p for root in roots if root.is_dir() for p in root.rglob("*.py")):
        if path == source:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                raise AssertionError(f"{path}:{node.lineno} uses {name}.{node.attr}")
            if isinstance(node, ast.Constant) and node.value in private:
                raise AssertionError(f"{path}:{node.lineno} names {name}.{node.value}")


def _assigned_attributes(path: Path) -> set[str]:
    """Names assigned as self.NAME in a module (instance attributes, which vars(cls) does not list)."""
    return {t.attr for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}


def _documented(cls, seen: set) -> list[str]:
    """Fields of `cls` and the dataclasses under it with no one-line doc next to them."""
    if cls in seen:
        return []
    seen.add(cls)
    missing = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("doc"):
            missing.append(f"{cls.__name__}.{f.name}")
        tp = f.type if isinstance(f.type, type) else None
        if tp is None:  # annotations are strings (from __future__ import annotations): look the class up
            import typing

            tp = typing.get_type_hints(cls).get(f.name)
        if dataclasses.is_dataclass(tp):
            missing += _documented(tp, seen)
    return missing


def test_every_config_field_and_method_parameter_is_documented():
    from prefdistill.config.schema import BenchConfig, BenchMethod, RunConfig
    from prefdistill.methods import METHODS

    seen: set = set()
    missing = _documented(RunConfig, seen) + _documented(BenchConfig, seen) + _documented(BenchMethod, seen)
    for spec in METHODS.values():
        missing += _documented(spec.params_cls, seen)
    assert not missing, missing
