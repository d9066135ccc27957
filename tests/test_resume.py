"""Kill a training process with SIGKILL, resume it, and get exactly the losses of an uninterrupted run;
damaged checkpoints give a clear error naming them while the previous one still loads."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
import pytest
import torch
from fewkit.checkpoint import CheckpointError, find_resume, list_checkpoints, load_part
from fewkit.train import TrainSettings, fit

ROOT = Path(__file__).resolve().parents[1]
STEPS, SAVE_EVERY = 12, 3

# A small training script that only uses fewkit.train and fewkit.masking: an MLP with dropout (RNG matters) on noisy
# targets drawn per position (data position matters). The sleep makes each step long enough to kill mid-run; a
# callback appends every finished step to progress.txt (fit writes log.json only with a checkpoint and at the end).
SCRIPT = r"""
import sys, time, torch
from torch import nn
from fewkit.masking import BatchStream
from fewkit.train import TrainSettings, fit
out, resume = sys.argv[1], sys.argv[2] == "resume"
torch.set_num_threads(1); torch.manual_seed(0)
X = torch.randn(96, 16); y = X @ torch.randn(16, 1)
net = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Dropout(0.2), nn.Linear(64, 1))
collate = lambda items, g: dict(x=torch.stack([a for a, _ in items]),
                                y=torch.stack([b for _, b in items]) + 0.1 * torch.randn(len(items), 1, generator=g))
stream = BatchStream(list(zip(X, y)), 8, collate, seed=0)
def loss_fn(m, b):
    time.sleep(0.15)
    return ((m(b["x"]) - b["y"]) ** 2).sum() + 1e-3 * torch.rand(()) # torch.rand: the global RNG matters too
def progress(rec):
    with open(out + "/progress.txt", "a") as f:
        f.write(f"{rec['step']}\n")
s = TrainSettings(steps=%d, lr=1e-2, warmup=2, save_every=%d, out=out, device="cpu", progress=False)
fit(net, stream, loss_fn, s, resume=resume, callbacks=[progress])
""" % (STEPS, SAVE_EVERY)


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", FEWKIT_LOGLEVEL="WARNING")


def _run(out, mode="fresh"):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(out), mode], env=_env(), timeout=600,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def _log(out):
    p = Path(out) / "log.json"
    return json.loads(p.read_text()) if p.exists() else []


def _steps_done(out) -> int:
    p = Path(out) / "progress.txt"
    return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    _run(d / "full")
    # the same run, killed with SIGKILL once step 7 is done (last checkpoint: step 6)
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(d / "killed"), "fresh"], env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while _steps_done(d / "killed") < 7:
        assert p.poll() is None, "training finished before it could be killed"
        assert time.time() - t0 < 600, "training did not reach step 7"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    killed_at = _steps_done(d / "killed")
    return d, p.returncode, killed_at


def test_kill_then_resume_gives_identical_losses(runs):
    d, rc, killed_at = runs
    assert rc == -signal.SIGKILL
    assert 7 <= killed_at < STEPS
    last = list_checkpoints(d / "killed" / "checkpoints")[-1]
    assert load_part(last)["step"] == killed_at // SAVE_EVERY * SAVE_EVERY
    assert not list((d / "killed" / "checkpoints").glob(".*.tmp"))  # no half-written checkpoint left behind
    _run(d / "killed", "resume")
    full, resumed = _log(d / "full"), _log(d / "killed")
    assert [h["step"] for h in resumed] == list(range(1, STEPS + 1))
    assert [h["loss"] for h in resumed] == [h["loss"] for h in full]  # exactly equal on CPU
    a = load_part(list_checkpoints(d / "full" / "checkpoints")[-1])
    b = load_part(list_checkpoints(d / "killed" / "checkpoints")[-1])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in ("scheduler", "data", "step"):
        assert a[k] == b[k]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_named_and_previous_loads(runs, damage, tmp_path):
    d, _, _ = runs
    shutil.copytree(d / "full", tmp_path / "run")
    ck = tmp_path / "run" / "checkpoints"
    assert [p.name for p in list_checkpoints(ck)] == ["step_00000009", "step_00000012"]  # keep=2
    latest = list_checkpoints(ck)[-1]
    f = latest / "state.pt"
    raw = bytearray(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(raw[: len(raw) // 3])
    else:
        raw[len(raw) // 2] ^= 0xFF
        f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as e:
        load_part(latest)
    msg = str(e.value)
    assert str(latest) in msg and ("truncated" if damage == "truncate" else "corrupted") in msg
    # resuming takes the previous good checkpoint (a warning names the broken one)
    assert find_resume(ck, "auto") == ck / "step_00000009"
    # the trainer refuses to resume from the damaged one when it is asked for by name, with the same clear error
    with pytest.raises(CheckpointError, match="step_00000012"):
        fit(torch.nn.Linear(1, 1), iter(()), lambda m, b: None,
            TrainSettings(steps=12, out=str(tmp_path / "run"), device="cpu"), resume=latest)
    prev = load_part(ck / "step_00000009")
    assert prev["step"] == 9 and len(prev["history"]) == 9
    # resuming from the previous one reproduces the uninterrupted losses
    full = _log(d / "full")
    assert [h["loss"] for h in prev["history"]] == [h["loss"] for h in full[:9]]


def test_garbage_checkpoint_is_named(tmp_path):
    c = tmp_path / "step_00000001"
    c.mkdir()
    (c / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no manifest.json"):  # a folder nobody committed
        load_part(c)
    size = (c / "state.pt").stat().st_size
    sha = hashlib.sha256((c / "state.pt").read_bytes()).hexdigest()
    (c / "manifest.json").write_text(json.dumps(dict(format=2, step=1, files=[dict(file="state.pt", bytes=size, sha256=sha)])))
    # committed, but not torch.save data: named, and never unpickled freely (the weights-only loader refuses it)
    with pytest.raises(CheckpointError, match="step_00000001/state.pt: (unreadable|refused)"):
        load_part(c)
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_part(tmp_path / "step_00000002")
