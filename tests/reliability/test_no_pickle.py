"""No code path can unpickle (or eval) data: nothing imports a pickle-family module, passes
allow_pickle=True, or calls a loader that unpickles. Records are msgpack of plain arrays,
exports are safetensors, checkpoints are orbax/tensorstore."""

import ast
from pathlib import Path

import pytest
from conftest import REPO

UNPICKLING_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal",
                      "_pickle"}
BUILTIN_CALLS = {"eval", "exec"}  # as bare names: `model.eval()` (torch) evaluates nothing
UNPICKLING_METHODS = {"read_pickle"}
SOURCES = sorted((REPO / "mmjax").rglob("*.py")) + sorted((REPO / "tools").rglob("*.py"))


def _unpickles(call: ast.Call) -> bool:
    """eval/exec, pandas' read_pickle, or torch.load without weights_only=True (the one
    converter in tools/ reads checkpoints that way: tensors and plain containers only)."""
    if isinstance(call.func, ast.Name):
        return call.func.id in BUILTIN_CALLS
    if ast.unparse(call.func) == "torch.load":
        return not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                       and k.value.value is True for k in call.keywords)
    return getattr(call.func, "attr", "") in UNPICKLING_METHODS


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [f"{where} imports {n}" for n in names
                      if n.split(".")[0] in UNPICKLING_MODULES]
        elif isinstance(node, ast.keyword) and node.arg == "allow_pickle" and not (
                isinstance(node.value, ast.Constant) and node.value.value is False):
            found.append(f"{where} passes allow_pickle={ast.unparse(node.value)}")
        elif isinstance(node, ast.Call) and _unpickles(node):
            found.append(f"{where} calls {ast.unparse(node.func)}")
    return found


def test_no_source_file_can_unpickle():
    assert len(SOURCES) > 50
    assert [v for path in SOURCES for v in _violations(path)] == []


@pytest.mark.parametrize("code, problem", [
    ("import pickle", "imports pickle"), ("from joblib import load", "imports joblib"),
    ("np.load(p, allow_pickle=True)", "allow_pickle=True"),
    ("pd.read_pickle(p)", "calls pd.read_pickle"), ("eval(text)", "calls eval"),
    ("torch.load(p)", "calls torch.load"), ("torch.load(p, weights_only=False)", "torch.load"),
])
def test_the_scan_finds_each_kind(tmp_path, code, problem):
    path = tmp_path / "probe.py"
    path.write_text(code + "\n")
    assert any(problem in v for v in _violations(path))


@pytest.mark.parametrize("code", ["model.eval()", "torch.load(p, weights_only=True)"])
def test_the_scan_passes_what_cannot_unpickle(tmp_path, code):
    path = tmp_path / "probe.py"
    path.write_text(code + "\n")
    assert _violations(path) == []
