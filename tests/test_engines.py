"One run, every engine: 1 process, DDP, fewkit ZeRO 0-3 (and offload), DeepSpeed ZeRO 0-3 give the same losses; DeepSpeed resumes exactly after SIGKILL and exports a folder transformers loads."

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "engine_run.py"
STEPS = 6


def _env(**kw):
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **kw)


def run(tmp: Path, runs: list[str], steps: int = STEPS, resume: str = "", env=None, nproc: int = 2) -> dict:
    "Run `runs` ('engine:stage[:offload]') one after another in one launch; {run: result}."
    if runs == ["none:0"]:
        cmd = [sys.executable, str(SCRIPT), "none:0", str(tmp), str(steps), resume]
    else:
        torchrun = Path(sys.executable).parent / "torchrun"
        cmd = [str(torchrun), "--nproc-per-node", str(nproc), "--standalone", str(SCRIPT), ",".join(runs), str(tmp), str(steps), resume]
    r = subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return {x: json.loads((tmp / x.replace(":", "_") / "result.json").read_text()) for x in runs}


RUNS = ["ddp:0", "zero:0", "zero:1", "zero:2", "zero:3", "zero:2:1", "deepspeed:0", "deepspeed:1", "deepspeed:2",
        "deepspeed:3"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    ref = run(tmp_path_factory.mktemp("ref"), ["none:0"])["none:0"]
    return ref, run(tmp_path_factory.mktemp("engines"), RUNS)


def _close(a, b, rel=1e-5):
    return len(a) == len(b) and all(abs(x - y) <= rel * abs(y) for x, y in zip(a, b))


@pytest.mark.multiproc
@pytest.mark.parametrize("name", RUNS)
def test_every_engine_gives_the_one_process_losses(results, name):
    ref, got = results
    g = got[name]
    assert g["world"] == 2
    assert _close(g["losses"], ref["losses"]), (name, g["losses"], ref["losses"])
    assert abs(g["weights_abs_sum"] - ref["weights_abs_sum"]) <= 1e-5 * ref["weights_abs_sum"]


@pytest.mark.multiproc
def test_deepspeed_zero3_resumes_exactly_after_sigkill_and_exports_a_transformers_folder(tmp_path):
    full = run(tmp_path / "full", ["deepspeed:3"], steps=8, env=_env(EXPORT_HF="1"))["deepspeed:3"]
    out = tmp_path / "killed" / "deepspeed_3"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nproc-per-node", "2", "--standalone", str(SCRIPT), "deepspeed:3", str(tmp_path / "killed"), "8"]
    p = subprocess.Popen(cmd, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (out / "checkpoints" / "step_00000004").exists() and time.time() - t0 < 300 and p.poll() is None:
        time.sleep(0.05)
    assert (out / "checkpoints" / "step_00000004").exists()
    os.killpg(p.pid, signal.SIGKILL)  # every rank and torchrun, mid-run
    p.wait()
    assert not (out / "result.json").exists()  # it really died before the end
    resumed = run(tmp_path / "killed", ["deepspeed:3"], steps=8, resume="auto")["deepspeed:3"]
    assert resumed["losses"] == full["losses"]  # bit-identical on CPU
    from transformers import BertForMaskedLM

    hf = BertForMaskedLM.from_pretrained(tmp_path / "full" / "deepspeed_3" / "hf")
    from fewkit.model_io import from_hf

    ours = from_hf(tmp_path / "full" / "deepspeed_3" / "hf")
    ids = torch.randint(5, 64, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), rtol=1e-5, atol=1e-5)
