"The prepared GPU check runs its own code path on CPU in --smoke mode, so the script cannot rot between GPU sessions."

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_on_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check.py"), str(tmp_path), "--smoke"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["tiny_bf16_sdpa"]["tokens_per_s"] > 0
    assert res["seed_stack"]["layers"] == 2  # the deepest stack that fits is taken
    assert res["env"]["device"] == "cpu"
