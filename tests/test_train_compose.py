"Chapter 1's techniques composed through the one trainer (fewkit.train): same losses where they must be."
import math
import pytest, torch
from fewkit.model import BertConfig, BertForMaskedLM, mlm_loss
from fewkit.train import TrainSettings, fit

V, T = 97, 24


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (n, T), generator=g)
    att = torch.ones(n, T, dtype=torch.long)
    for i in range(n): att[i, int(torch.randint(T // 2, T + 1, (1,), generator=g)):] = 0  # padding
    labels = torch.where((torch.rand(n, T, generator=g) < 0.2) & (att == 1), ids, torch.full_like(ids, -100))
    labels[:, 1] = ids[:, 1]  # at least one target per row
    return [dict(input_ids=ids[i], attention_mask=att[i], labels=labels[i]) for i in range(n)]


def _batches(data, bs=8):
    for i in range(0, len(data), bs):
        items = data[i:i + bs]
        yield {k: torch.stack([it[k] for it in items]) for k in items[0]}


class Stream:
    "A deterministic batch iterator with the resumable-position protocol fit() expects."
    def __init__(self, data): self.data, self.pos = data, 0
    def __iter__(self): return self
    def __next__(self):
        b = list(_batches(self.data))[self.pos % 8]; self.pos += 1; return b
    def state_dict(self): return dict(pos=self.pos)
    def load_state_dict(self, d): self.pos = d["pos"]


def loss_sum(model, b):
    return mlm_loss(model(b["input_ids"], b["attention_mask"]), b["labels"], reduction="sum")


def count(b): return int((b["labels"] != -100).sum())


def run(tmp_path, dropout=0.0, steps=6, lr=2e-3, **kw):
    torch.manual_seed(0)
    cfg = BertConfig.preset("tiny", vocab_size=V).replace(num_hidden_layers=3, hidden_size=64, intermediate_size=128,
                                                          hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = BertForMaskedLM(cfg)
    s = TrainSettings(steps=steps, lr=lr, warmup=1, grad_clip=0.0, out=str(tmp_path / "r"), device="cpu", **kw)
    res = fit(model, Stream(_data()), loss_sum, s, count_fn=count, progress=False)
    return [h["loss"] for h in res.history] if hasattr(res, "history") else res


def _losses(r): return r if isinstance(r, list) else [h["loss"] for h in r]


def test_accumulation_checkpointing_fusion_leave_losses_unchanged(tmp_path):
    base = _losses(run(tmp_path))
    combo = _losses(run(tmp_path, accum=dict(micro_batches=3), checkpointing=dict(policy="every", impl="fewkit"),
                        fusion=dict(impl="autograd")))
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
    r = _losses(run(tmp_path, steps=4, amp=dict(dtype="fp16", init_scale=2.0 ** 10), accum=dict(micro_batches=2)))
    assert len(r) == 4 and all(math.isfinite(x) for x in r)
