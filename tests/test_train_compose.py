"Chapter 1's techniques composed through the one trainer (fewkit.train): same losses where they must be."

import math

import torch

from fewkit.model import BertConfig, BertForMaskedLM, mlm_loss
from fewkit.train import TrainSettings, fit

V, T = 97, 24


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (n, T), generator=g)
    att = torch.ones(n, T, dtype=torch.long)
    for i in range(n):
        att[i, int(torch.randint(T // 2, T + 1, (1,), generator=g)) :] = 0  # padding
    labels = torch.where((torch.rand(n, T, generator=g) < 0.2) & (att == 1), ids, torch.full_like(ids, -100))
    labels[:, 1] = ids[:, 1]  # at least one target per row
    return [dict(input_ids=ids[i], attention_mask=att[i], labels=labels[i]) for i in range(n)]


def _batches(data, bs=8):
    for i in range(0, len(data), bs):
        items = data[i : i + bs]
        yield {k: torch.stack([it[k] for it in items]) for k in items[0]}


class Stream:
    "A deterministic batch iterator with the resumable-position protocol fit() expects."

    def __init__(self, data):
        self.batches = list(_batches(data))
        self.pos = 0

    def __iter__(self):
        return self

    def __next__(self):
        b = self.batches[self.pos % len(self.batches)]
        self.pos += 1
        return b

    def state_dict(self):
        return dict(pos=self.pos)

    def load_state_dict(self, d):
        self.pos = d["pos"]


def loss_sum(model, b):
    return mlm_loss(model(b["input_ids"], b["attention_mask"]), b["labels"], reduction="sum")


def count(b):
    return int((b["labels"] != -100).sum())


def run(tmp_path, dropout=0.0, steps=6, lr=2e-3, warmup=1, **kw):
    "Losses of a short run; technique settings come as nested dicts, as from a config file."
    torch.manual_seed(0)
    cfg = BertConfig.preset("tiny", vocab_size=V).replace(
        num_hidden_layers=3,
        hidden_size=64,
        intermediate_size=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    model = BertForMaskedLM(cfg)
    s = TrainSettings.from_dict(
        dict(steps=steps, lr=lr, warmup=warmup, grad_clip=0.0, out=str(tmp_path / "r"), device="cpu", **kw)
    )
    res = fit(model, Stream(_data()), loss_sum, s, count_fn=count)
    return res.history


def _losses(history):
    return [h["loss"] for h in history]


def test_accumulation_checkpointing_fusion_leave_losses_unchanged(tmp_path):
    base = _losses(run(tmp_path))
    combo = _losses(
        run(
            tmp_path,
            accum=dict(micro_batches=3),
            checkpointing=dict(policy="every", impl="fewkit"),
            fusion=dict(impl="autograd"),
        )
    )
    assert len(base) == len(combo) == 6
    assert max(abs(a - b) for a, b in zip(base, combo)) < 1e-5, (base, combo)


def test_checkpointing_with_dropout_is_exact(tmp_path):
    a = _losses(run(tmp_path, dropout=0.1))
    b = _losses(run(tmp_path, dropout=0.1, checkpointing=dict(policy="sqrt", impl="torch")))
    assert a == b


def test_lamb_and_bf16_train(tmp_path):
    base = _losses(run(tmp_path, steps=8))
    lamb = _losses(run(tmp_path, steps=16, lr=5e-2, optim=dict(name="lamb")))  # LAMB's lr is relative to ‖w‖
    bf16 = _losses(run(tmp_path, steps=8, amp=dict(dtype="bf16")))
    assert all(math.isfinite(x) for x in lamb + bf16)
    assert sum(lamb[8:]) < sum(lamb[:8])  # second pass over the same 8 batches is better
    assert max(abs(a - b) for a, b in zip(base, bf16)) < 0.1  # bf16 rounding, same trajectory


def test_fp16_loss_scaling_with_accumulation(tmp_path):
    r = _losses(run(tmp_path, steps=4, amp=dict(dtype="fp16", init_scale=2.0**10), accum=dict(micro_batches=2)))
    assert len(r) == 4
    assert all(math.isfinite(x) for x in r)


def test_skipped_fp16_step_holds_the_schedule_and_is_marked(tmp_path):
    # a scale of 2**20 overflows fp16 on the first steps: they are skipped, and the LR must not move meanwhile
    h = run(tmp_path, steps=8, lr=1e-3, warmup=0, amp=dict(dtype="fp16", init_scale=2.0**20))
    skipped = [r["step"] for r in h if r.get("skipped")]
    assert skipped, "expected overflowing steps at a loss scale of 2**20"
    assert skipped == list(range(1, len(skipped) + 1))  # the first steps, until the scale has come down
    k = len(skipped)
    lrs = [r["lr"] for r in h]
    assert lrs[: k + 1] == [1e-3] * (k + 1)  # held while skipping, and for the first real step
    assert abs(lrs[k + 1] - 1e-3 * 7 / 8) < 1e-12  # then the decay starts from where it was: 7/8, not (8-k-1)/8


def test_extra_loss_parts_are_logged_and_change_the_gradient(tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig.preset("tiny", vocab_size=V).replace(num_hidden_layers=1, hidden_size=32))
    ref = BertForMaskedLM(BertConfig.preset("tiny", vocab_size=V).replace(num_hidden_layers=1, hidden_size=32))
    ref.load_state_dict(model.state_dict())
    s = TrainSettings(steps=3, lr=1e-2, warmup=0, out="", device="cpu")
    penalty = lambda m, b: dict(l2=1e-2 * sum((p**2).sum() for p in m.parameters()))
    a = fit(model, Stream(_data()), loss_sum, s, count_fn=count, extra_loss=penalty)
    b = fit(ref, Stream(_data()), loss_sum, s, count_fn=count)
    assert [sorted(r["parts"]) for r in a.history] == [["l2"]] * 3
    assert a.history[0]["loss"] == b.history[0]["loss"]  # the main loss is logged on its own
    assert not torch.equal(a.model.cls.predictions.bias, b.model.cls.predictions.bias) or not all(
        torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters())
    )


def test_fused_adamw_is_the_default_records_itself_and_trains_as_the_unfused(tmp_path):
    # OptimSettings.fused=None (the default): torch's fused AdamW wherever the device has it (CPU in torch 2.13);
    # fit writes the kernel it built into train_settings.json; the losses equal the per-tensor kernel's to rounding
    import json
    from fewkit.efficiency.lamb import fused_supported

    auto = _losses(run(tmp_path / "auto", steps=8))
    built = json.loads((tmp_path / "auto" / "r" / "train_settings.json").read_text())["optimizer"]
    assert built["type"] == "AdamW" and built["fused"] is fused_supported([torch.zeros(1)])
    plain = _losses(run(tmp_path / "plain", steps=8, optim=dict(fused=False)))
    assert not json.loads((tmp_path / "plain" / "r" / "train_settings.json").read_text())["optimizer"]["fused"]
    assert max(abs(a - b) for a, b in zip(auto, plain)) < 1e-5, (auto, plain)
