"Issue 16, item 1: the same `fewkit fewclue` command with the same seed gives identical results in two processes, whatever PYTHONHASHSEED is."

import json
import os
import subprocess
import sys


def _run(out, hashseed: str):
    env = dict(os.environ, PYTHONHASHSEED=hashseed, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "fewkit.doors.fewshot", "--task", "eprstmt,chid", "--splits", "0",
           "--method", "finetune,pet,fuzzy-pet", "--max-steps", "6", "--max-len", "64", "--out", str(out)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    for r in results:
        r.pop("seconds")  # the only field that may differ
    return results, json.loads((out / "comparisons.json").read_text())


def test_two_processes_two_hash_seeds_same_results(tmp_path):
    a = _run(tmp_path / "a", "1")
    b = _run(tmp_path / "b", "2")
    assert [r["method"] for r in a[0]] == ["finetune", "finetune", "pet", "pet", "fuzzy-pet", "fuzzy-pet"]
    assert a == b  # every dev score, per-example correctness, selected step and paired interval
