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
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ENGINE_OPTIM": "adamw", **kw}


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


# 'engine:stage[:offload]'; offload 1 = the optimizer (ZeRO-Offload), 2 = the parameters, 3 = both
RUNS = ["ddp:0", "zero:0", "zero:1", "zero:2", "zero:3", "zero:2:1", "deepspeed:0", "deepspeed:1", "deepspeed:2",
        "deepspeed:3", "deepspeed:2:1", "deepspeed:3:1", "deepspeed:3:3"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    ref = run(tmp_path_factory.mktemp("ref"), ["none:0"])["none:0"]
    return ref, run(tmp_path_factory.mktemp("engines"), RUNS)


def _ranks_left(out: Path) -> list[int]:
    "Pids of engine_run.py processes still writing to `out`'s parent folder."
    left = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"engine_run.py") for a in argv) and str(out.parent).encode() in argv:
            left.append(int(d.name))
    return left


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
    # rank 0 stops after step 5 (step 4's checkpoint written, step 6's not yet): the kill always lands mid-run
    p = subprocess.Popen(cmd, env=_env(ENGINE_PAUSE_AT="5"), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (out / "checkpoints" / "step_00000004").exists() and time.time() - t0 < 300 and p.poll() is None:
        time.sleep(0.05)
    assert (out / "checkpoints" / "step_00000004").exists()
    os.killpg(p.pid, signal.SIGKILL)  # every rank and torchrun, mid-run
    p.wait()
    assert not (out / "result.json").exists()  # it really died before the end
    assert not (out / "checkpoints" / "step_00000006").exists()
    t0 = time.time()
    while _ranks_left(out) and time.time() - t0 < 30:
        time.sleep(0.1)
    assert not _ranks_left(out)  # no rank outlives the kill
    resumed = run(tmp_path / "killed", ["deepspeed:3"], steps=8, resume="auto")["deepspeed:3"]
    assert resumed["losses"] == full["losses"]  # bit-identical on CPU
    from transformers import BertForMaskedLM

    hf = BertForMaskedLM.from_pretrained(tmp_path / "full" / "deepspeed_3" / "hf")
    from fewkit.model_io import from_hf

    ours = from_hf(tmp_path / "full" / "deepspeed_3" / "hf")
    ids = torch.randint(5, 64, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), rtol=1e-5, atol=1e-5)


@pytest.mark.multiproc
def test_lamb_under_ddp_and_deepspeed_stage0_gives_the_one_process_losses(tmp_path, results):
    "DeepSpeed takes fewkit's LAMB as its client optimizer at stage 0 (fp32): every tensor keeps its own trust ratio."
    env = _env(ENGINE_OPTIM="lamb")
    ref = run(tmp_path / "ref", ["none:0"], env=env)["none:0"]
    got = run(tmp_path / "lamb", ["ddp:0", "deepspeed:0"], env=env)
    adamw = results[0]["losses"]
    assert not _close(ref["losses"], adamw, rel=1e-4)  # LAMB took other steps than AdamW: it really ran
    for name, g in got.items():
        assert _close(g["losses"], ref["losses"]), (name, g["losses"], ref["losses"])
        assert abs(g["weights_abs_sum"] - ref["weights_abs_sum"]) <= 1e-5 * ref["weights_abs_sum"]


def test_lamb_with_flat_partitions_and_misplaced_offload_are_refused():
    "ZeRO 1-3 and bf16 hand DeepSpeed's optimizer flat partitions (one trust ratio per partition): refused, with why."
    from fewkit.core import FewkitError
    from fewkit.parallel.engine import deepspeed_config
    from fewkit.parallel.zero import Zero, ZeroSettings
    from fewkit.testing import tiny_bert
    from fewkit.train import TrainSettings, setup

    base = TrainSettings.from_dict(dict(batch_size=8, optim=dict(name="lamb"), parallel=dict(engine="deepspeed")))
    assert "optimizer" not in deepspeed_config(base.replace(parallel=base.parallel.replace(zero=ZeroSettings(stage=0))), 2)
    for stage, dtype in [(1, "fp32"), (2, "fp32"), (3, "fp32"), (0, "bf16")]:
        s = base.replace(parallel=base.parallel.replace(zero=ZeroSettings(stage=stage)))
        s = s.replace(amp=s.amp.replace(dtype=dtype))
        with pytest.raises(FewkitError, match="trust ratio"):
            deepspeed_config(s, 2)
    off = base.replace(optim=base.optim.replace(name="adamw"))
    with pytest.raises(FewkitError, match="stage 3"):
        deepspeed_config(off.replace(parallel=off.parallel.replace(zero=ZeroSettings(stage=2, offload_param=True))), 2)
    cfg = deepspeed_config(off.replace(parallel=off.parallel.replace(zero=ZeroSettings(stage=3, offload_param=True))), 2)
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu" and cfg["zero_force_ds_cpu_optimizer"] is False
    with pytest.raises(FewkitError, match="AdamW"):
        setup(tiny_bert(seed=0), TrainSettings.from_dict(dict(optim=dict(name="lamb"), parallel=dict(engine="zero"))))
    with pytest.raises(FewkitError, match="offload"):
        Zero(tiny_bert(seed=0), ZeroSettings(stage=3, offload_param=True))
