"""A few-shot run (PET with its auxiliary MLM loss and dev selection) trained through `fewkit.train.fit`,
killed with SIGKILL after a checkpoint, resumed: the losses, dev evaluations and final weights equal those of
the uninterrupted run (CPU, exactly)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewkit.checkpoint import list_checkpoints, step_name

ROOT = Path(__file__).resolve().parents[1]
STEPS, SAVE_EVERY, KILL_AT = 12, 3, 8  # killed once step 8 is done: the last checkpoint is step 6

# PET on the embedded review task with a random 2-layer tiny BERT (dropout on: the RNG state matters), the
# auxiliary MLM loss on unlabelled reviews (masks drawn from the batch stream's generator: the data position
# matters) and dev selection twice (the kept state matters). The process kills itself with SIGKILL from a
# callback once step KILL_AT is done, so the kill always lands at the same place, mid-run, with no clean-up.
SCRIPT = r"""
import json, os, signal, sys, torch
from fewkit.data import review_task, task_info
from fewkit.model import BertConfig, BertForMaskedLM
from fewkit.tokenizer import build_vocab, make_tokenizer
from fewkit.fewshot.pet import PATTERNS, FewShotSettings, PromptModel, label_words, prompt_feats, train_fewshot

out, mode, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
info, data = task_info("reviews"), review_task(seed=0, shots=8)
texts = [e.text_a for v in data.values() for e in v[:64]] + ["".join(PATTERNS["reviews"]), "很好很差"]
tok = make_tokenizer(build_vocab(texts))
words = label_words(info, tok)
enc = lambda exs: prompt_feats(info, tok, exs, 0, words, 40)
torch.manual_seed(0)
mlm = BertForMaskedLM(BertConfig.preset("tiny", vocab_size=len(tok)).replace(num_hidden_layers=2))
cfg = FewShotSettings(epochs=1, min_steps=%d, max_steps=%d, batch_size=4, lr=1e-3, n_evals=2, mlm_weight=0.3,
                      save_every=%d, out=out, device="cpu")


def kill(rec):
    if rec["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


model, h = train_fewshot(PromptModel(mlm, words), enc(data["train"]), cfg, dev=enc(data["dev"][:16]),
                         unlabeled=enc(data["test"][:32]), tok=tok, resume=mode == "resume", callbacks=[kill])
json.dump(dict(losses=h["losses"], evals=h["evals"], steps=[r["step"] for r in h["history"]],
               best_step=h["best_step"]), open(os.path.join(out, "result.json"), "w"))
torch.save(model.state_dict(), os.path.join(out, "final.pt"))
""" % (STEPS, STEPS, SAVE_EVERY)


def _run(out, mode, kill_at=0):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", FEWKIT_LOGLEVEL="WARNING")
    cmd = [sys.executable, "-c", SCRIPT, str(out), mode, str(kill_at)]
    return subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("fewshot_resume")
    full = _run(d / "full", "fresh")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _run(d / "killed", "fresh", KILL_AT)
    return d, killed


def test_the_run_was_killed_after_a_checkpoint(runs):
    d, killed = runs
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (d / "killed" / "result.json").exists()
    saved = list_checkpoints(d / "killed" / "checkpoints")
    assert saved and saved[-1].name == step_name(KILL_AT // SAVE_EVERY * SAVE_EVERY)  # step 6


@pytest.fixture(scope="module")
def resumed(runs):
    d, _ = runs
    r = _run(d / "killed", "resume")
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((d / "full" / "result.json").read_text())
    b = json.loads((d / "killed" / "result.json").read_text())
    return d, a, b


def test_resumed_fewshot_run_has_the_uninterrupted_losses(resumed):
    d, a, b = resumed
    assert b["steps"] == list(range(1, STEPS + 1))
    assert len(a["evals"]) == 2
    assert b["losses"] == pytest.approx(a["losses"], abs=1e-6)  # on CPU they are in fact identical
    assert b["evals"] == a["evals"]  # dev evaluated at steps 6 and 12 with the same accuracies


def test_resumed_fewshot_run_selects_the_same_state(resumed):
    d, a, b = resumed
    assert b["best_step"] == a["best_step"]
    wa = torch.load(d / "full" / "final.pt", weights_only=True)
    wb = torch.load(d / "killed" / "final.pt", weights_only=True)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)
