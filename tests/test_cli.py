"The `fewkit` command as a user runs it: --help everywhere, data check, bench and demo end to end."
import json, os, subprocess, sys
from pathlib import Path
import pytest
from fewkit.cli import COMMANDS
from fewkit.core import find_shared

FEWKIT = [sys.executable, "-m", "fewkit.cli"]


def run(*args, timeout=300, **kw):
    return subprocess.run([*FEWKIT, *args], capture_output=True, text=True, timeout=timeout, **kw)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for name in COMMANDS: assert name in r.stdout


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_subcommand_has_help(cmd):
    r = run(cmd, "--help", timeout=180)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()


def test_pretrain_knowledge_flag_routes_to_the_knowledge_door():
    k = run("pretrain", "--knowledge", "--help", timeout=180)
    assert k.returncode == 0, k.stderr
    assert "fewkit pretrain --knowledge" in k.stdout and "--arm" in k.stdout
    plain = run("pretrain", "--help", timeout=180)  # without the flag: the plain MLM door, unchanged
    assert plain.returncode == 0 and "--arm" not in plain.stdout


def test_unknown_command_fails():
    r = run("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr


@pytest.mark.skipif(find_shared("fewclue") is None, reason="needs ../shared/fewclue")
def test_data_check_shared_and_broken(tmp_path):
    r = run("data", "check", "--root", str(find_shared("fewclue")), "--task", "eprstmt")
    assert r.returncode == 0, r.stderr
    assert "eprstmt" in r.stdout and "160" in r.stdout
    bad = tmp_path / "eprstmt"; bad.mkdir()
    (bad / "train_0.json").write_text('{"id": 0, "sentence": "好", "label": "Positive"}\n{"id": 1, "sentence": \n', encoding="utf-8")
    r = run("data", "check", "--root", str(tmp_path), "--task", "eprstmt")
    assert r.returncode != 0
    assert "train_0.json:2" in (r.stdout + r.stderr)


def test_bench_memory_quick(tmp_path):
    r = run("bench", "memory", "--quick", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "memory.json").read_text())
    row = rec["results"]["rows"][0]
    assert row["grads"] == row["params"] and row["optimizer"] > 2 * row["params"] - 1
    assert "device" in json.dumps(rec["env"]).lower() and rec["pngs"] == ["memory.png"]
    assert rec["smoke"] is True and rec["load"]["cores"] >= 1  # a --quick run says it is one, with the load


def test_demo_foundation_section(tmp_path):
    r = run("demo", "--only", "0", "--out", str(tmp_path), timeout=400)
    assert r.returncode == 0, r.stderr
    rep = (tmp_path / "report.md").read_text()
    assert "## Foundation" in rep and "memory.png" in rep and (tmp_path / "memory.png").stat().st_size > 1000
