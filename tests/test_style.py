"House rules that can be checked: one statement per line, one training loop, the layer contracts, fixtures out of the API."

import ast
import io
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fewkit"
DOORS = {"cli.py", "bench.py", "demo.py"}


def _modules():
    return [p for p in sorted(PKG.rglob("*.py")) if p.name != "_modidx.py"]


def statement_lines(path: Path) -> tuple[int, int]:
    "(lines where two or more statements start, lines holding code) of one file."
    src = path.read_text()
    starts = {}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.stmt):
            starts[node.lineno] = starts.get(node.lineno, 0) + 1
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    code = {t.start[0] for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type not in skip}
    return sum(1 for n in starts.values() if n > 1), len(code)


def test_one_statement_per_line():
    multi, code = 0, 0
    worst = []
    for p in _modules():
        m, c = statement_lines(p)
        multi += m
        code += c
        if m:
            worst.append((m, str(p.relative_to(ROOT))))
    assert code > 1000
    assert multi / code < 0.02, f"{multi} of {code} code lines hold several statements; most in {sorted(worst)[-5:]}"


def _is_door(p: Path) -> bool:
    rel = p.relative_to(PKG)
    return rel.parts[0] == "doors" or (len(rel.parts) == 1 and rel.name in DOORS)


STEPPERS = ("opt", "optim", "optimizer", "z", "zero", "mp", "prec", "precision", "engine")


def _step_calls_in_loops(tree) -> list[int]:
    "Line numbers of `<optimizer-like>.step()` calls inside for/while loops."
    hits = []
    for loop in ast.walk(tree):
        if not isinstance(loop, (ast.For, ast.While)):
            continue
        for node in ast.walk(loop):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step":
                base = node.func.value
                name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
                low = name.lower()
                if "sched" in low:
                    continue
                if any(low == s or low.startswith(s) or low.endswith(s) for s in STEPPERS):
                    hits.append(node.lineno)
    return sorted(set(hits))


def test_one_training_loop():
    "fewkit.train is the only module (doors aside) with a loop that steps an optimizer; DSGAN is the one exception."
    found = {}
    for p in _modules():
        if _is_door(p):
            continue
        hits = _step_calls_in_loops(ast.parse(p.read_text()))
        if hits:
            found[str(p.relative_to(ROOT))] = hits
    train = ast.parse((PKG / "train.py").read_text())
    fit = next(n for n in train.body if isinstance(n, ast.FunctionDef) and n.name == "fit")
    loops = [n for n in ast.walk(fit) if isinstance(n, ast.While)]
    calls = [c.func.id for w in loops for c in ast.walk(w) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)]
    assert "train_step" in calls  # the one loop: fit's while loop, one train_step (one optimizer step) per turn
    found.pop("fewkit/train.py", None)
    found.pop("fewkit/knowledge/distant_supervision.py", None)  # DSGAN: two optimizers in turn (31 says why)
    assert found == {}, f"optimizer steps inside loops outside fewkit/train.py: {found}"


def test_fixtures_are_not_chapter_api():
    for p in _modules():
        if p.name == "testing.py":
            continue
        tree = ast.parse(p.read_text())
        names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        for fixture in ("hello", "fail_on", "tiny_bert", "mlm_batch"):
            assert fixture not in names, f"{p.relative_to(ROOT)} defines the test fixture {fixture}"
    assert "has_module" not in "".join(p.read_text() for p in _modules()), "has_module scaffolding is back"


def _lint(tmp_path: Path, edits: dict) -> subprocess.CompletedProcess:
    "lint-imports on a copy of the package with `edits` ({relative module path: line to append})."
    shutil.copytree(PKG, tmp_path / "fewkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for rel, line in edits.items():
        with open(tmp_path / "fewkit" / rel, "a") as f:
            f.write("\n" + line + "\n")
    exe = Path(sys.executable).parent / "lint-imports"
    env = {"PATH": str(exe.parent), "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path)}
    return subprocess.run([str(exe), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "edits, broken",
    [
        ({}, None),
        ({"efficiency/lamb.py": "import fewkit.cli"}, "layers"),  # a technique imports a door
        ({"model.py": "import fewkit.train"}, "layers"),  # a foundation reaches up to the trainer
        ({"fewshot/pet.py": "import fewkit.fewshot.fewclue"}, "cycles"),  # fewclue imports pet: a circle
    ],
)
def test_layer_contracts_hold_and_catch_violations(tmp_path, edits, broken):
    r = _lint(tmp_path, edits)
    out = r.stdout + r.stderr
    if broken is None:
        assert r.returncode == 0, out[-3000:]
        assert "0 broken" in out
    else:
        assert r.returncode != 0, f"lint-imports accepted {edits}:\n{out[-2000:]}"
        assert "BROKEN" in out
        assert broken in out.split("Broken contracts")[-1] or broken in out


def test_no_parameter_list_of_ten_or_more():
    "Parameter lists of 10+ become a settings object (issue 13)."
    long = []
    for p in _modules():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = n.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
                if len(names) >= 10:
                    long.append(f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({len(names)})")
    assert long == [], long
