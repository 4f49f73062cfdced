"""No code path can unpickle (or eval) data: nothing imports a pickle-family module, passes
allow_pickle=True, or calls a loader that unpickles. Records are msgpack of plain arrays,
exports are safetensors, checkpoints are orbax/tensorstore."""

import ast
from pathlib import Path

import pytest
from conftest import REPO

UNPICKLING_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal",
                      "_pickle"}
UNPICKLING_CALLS = {"read_pickle", "eval", "exec"}
SOURCES = sorted((REPO / "mmjax").rglob("*.py")) + sorted((REPO / "tools").rglob("*.py"))


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
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in UNPICKLING_CALLS or ast.unparse(node.func) == "torch.load":
                found.append(f"{where} calls {ast.unparse(node.func)}")
    return found


def test_no_source_file_can_unpickle():
    assert len(SOURCES) > 50
    assert [v for path in SOURCES for v in _violations(path)] == []


@pytest.mark.parametrize("code, problem", [
    ("import pickle", "imports pickle"), ("from joblib import load", "imports joblib"),
    ("np.load(p, allow_pickle=True)", "allow_pickle=True"),
    ("pd.read_pickle(p)", "calls pd.read_pickle"), ("eval(text)", "calls eval"),
])
def test_the_scan_finds_each_kind(tmp_path, code, problem):
    path = tmp_path / "probe.py"
    path.write_text(code + "\n")
    assert any(problem in v for v in _violations(path))
