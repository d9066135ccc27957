"Checkpoint faults: killed saves, broken or missing manifests, planted pickles, disk full, changed settings on resume."

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from fewkit.checkpoint import CheckpointError, list_checkpoints, save_checkpoint, tmp_dir, _sha256
from fewkit.core import write_json
from fewkit.masking import BatchStream
from fewkit.train import TrainSettings, fit

ROOT = Path(__file__).resolve().parents[1]


def toy(seed=0):
    torch.manual_seed(seed)
    X = torch.randn(64, 8)
    y = X @ torch.randn(8, 1)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1))

    def collate(items, g):
        x = torch.stack([a for a, _ in items])
        t = torch.stack([b for _, b in items]) + 0.1 * torch.randn(len(items), 1, generator=g)
        return dict(x=x, y=t)

    return net, BatchStream(list(zip(X, y)), 8, collate, seed=seed)


def mse_sum(m, b):
    return ((m(b["x"]) - b["y"]) ** 2).sum()


def settings(out, **kw):
    base = dict(steps=8, lr=3e-2, warmup=2, save_every=1, keep=2, out=str(out), device="cpu")
    return TrainSettings(**{**base, **kw})


def losses(res):
    return [h["loss"] for h in res.history]


SCRIPT = textwrap.dedent(
    """
    import sys, time, shutil
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import fewkit.train as T
    import fewkit.checkpoint as C
    from test_faults_checkpoint import toy, mse_sum, settings
    where, out = sys.argv[1], Path(sys.argv[2])
    marker = out.parent / "marker"

    def stall(tag):
        marker.write_text(tag)
        time.sleep(60)

    if where == "parts":  # killed after the parts are written, before the commit: an orphan temp folder
        T.commit = lambda ckdir, step, keep=2: stall("parts") if step == 5 else C.commit(ckdir, step, keep)
    if where == "prune":  # killed after the rename, before old checkpoints are pruned: keep + 1 folders
        real = shutil.rmtree
        def slow(path, *a, **k):
            if "step_" in str(path) and not str(path).endswith(".tmp") and "00000005" not in str(path) and C.list_checkpoints(out / "checkpoints")[-1].name == "step_00000005":
                stall("prune")
            return real(path, *a, **k)
        C.shutil.rmtree = slow
    T.fit(*toy(), mse_sum, settings(out))
    """
)


@pytest.mark.parametrize("where", ["parts", "prune"])
def test_kill_during_save_leaves_no_orphan_and_resumes_exactly(tmp_path, where):
    full = losses(fit(*toy(), mse_sum, settings(tmp_path / "full")))
    out = tmp_path / "run"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests")))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, str(script), where, str(out)], env=env)
    marker = tmp_path / "marker"
    t0 = time.time()
    while not marker.exists() and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.05)
    assert marker.read_text() == where
    p.send_signal(signal.SIGKILL)
    p.wait()
    ck = out / "checkpoints"
    assert len(list_checkpoints(ck)) <= 2 + 1  # never more than keep + 1
    resumed = fit(*toy(), mse_sum, settings(out), resume="auto")
    assert not list(ck.glob(".step_*.tmp"))  # the orphan of the killed save is gone
    assert len(list_checkpoints(ck)) == 2
    assert losses(resumed) == full  # bit-identical on CPU


def test_resume_falls_back_past_a_broken_checkpoint(tmp_path):
    full = losses(fit(*toy(), mse_sum, settings(tmp_path / "full")))
    out = tmp_path / "run"
    fit(*toy(), mse_sum, settings(out, steps=8).replace(save_every=2, keep=3))
    newest = list_checkpoints(out / "checkpoints")[-1]
    (newest / "state.pt").write_bytes(b"not a checkpoint")
    res = fit(*toy(), mse_sum, settings(out).replace(save_every=2, keep=3), resume="auto")
    assert losses(res) == full


def test_missing_manifest_is_an_error_not_a_restart(tmp_path):
    out = tmp_path / "run"
    fit(*toy(), mse_sum, settings(out))
    for c in list_checkpoints(out / "checkpoints"):
        (c / "manifest.json").unlink()
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="no manifest.json"):
        fit(*toy(), mse_sum, settings(out), resume="auto")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing overwritten


def test_unlisted_rank_part_is_refused(tmp_path):
    c = save_checkpoint(tmp_path / "ck", 1, dict(step=1))
    torch.save(dict(step=1), c / "rank001.pt")  # a partition the manifest does not know
    with pytest.raises(CheckpointError, match="not in the manifest"):
        fit(*toy(), mse_sum, settings(tmp_path / "x"), resume=c)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_with_a_matching_manifest_runs_nothing(tmp_path):
    out = tmp_path / "run"
    fit(*toy(), mse_sum, settings(out, steps=2))
    c = list_checkpoints(out / "checkpoints")[-1]
    marker = tmp_path / "pwned"
    (c / "state.pt").write_bytes(pickle.dumps({"model": Evil(marker)}))
    e = dict(file="state.pt", bytes=(c / "state.pt").stat().st_size, sha256=_sha256(c / "state.pt"))
    write_json(c / "manifest.json", dict(format=2, step=2, files=[e]))
    with pytest.raises(CheckpointError, match="refused"):
        fit(*toy(), mse_sum, settings(out, steps=2), resume=c)
    assert not marker.exists()


def test_disk_full_names_the_folder_and_the_bytes(tmp_path, monkeypatch):
    import fewkit.checkpoint as C

    def full(path, write, mode="wb"):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(C, "atomic_write", full)
    with pytest.raises(CheckpointError, match=r"disk full: [\d,]+ bytes needed"):
        fit(*toy(), mse_sum, settings(tmp_path / "run", steps=1))


def test_resume_with_other_settings_is_refused_unless_allowed(tmp_path):
    out = tmp_path / "run"
    fit(*toy(), mse_sum, settings(out, steps=8).replace(save_every=4))
    ck = list_checkpoints(out / "checkpoints")[0]
    for change in (dict(lr=1e-2), dict(batch_size=4), dict(warmup=3)):
        with pytest.raises(CheckpointError, match="settings changed"):
            fit(*toy(), mse_sum, settings(out, **change).replace(save_every=4), resume=ck)
    fit(*toy(), mse_sum, settings(out, lr=1e-2).replace(save_every=4, allow_changes=True), resume=ck)
    run = json.loads((out / "train_settings.json").read_text())
    assert run["settings"]["lr"] == 1e-2  # the report records what was actually used
    assert run["changed"] == {"lr": [3e-2, 1e-2]}
    assert run["resumed_from"].endswith("step_00000004")


def test_written_files_follow_the_umask(tmp_path):
    out = tmp_path / "run"
    fit(*toy(), mse_sum, settings(out, steps=1))
    mask = os.umask(0o022)
    os.umask(mask)
    for f in [out / "log.json", out / "train_settings.json", *list_checkpoints(out / "checkpoints")[0].iterdir()]:
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f
