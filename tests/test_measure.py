"Exact-bytes meters, FLOP counts, timers and figures of fewkit.measure (expected numbers derived inline)."
import json
import pytest
import torch
import torch.nn as nn
from fewkit.core import device_name
from fewkit.measure import (SavedTensorMeter, env_info, figure, flop_count, model_state_bytes, peak_memory,
                            save_figure, storage_bytes, tensor_bytes, time_ratio)

B, I, H, O = 3, 10, 24, 6  # Linear(I, H) -> GELU -> Linear(H, O) on x: (B, I)


def lgl(dtype):
    return nn.Sequential(nn.Linear(I, H), nn.GELU(), nn.Linear(H, O)).to(dtype)


@pytest.mark.parametrize("dtype,e", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_saved_bytes_linear_gelu_linear(dtype, e):
    # saved: x (for dW1), GELU input u, GELU output a (for dW2), W2 (for da); W1 only if x needs grad
    net, x = lgl(dtype), torch.randn(B, I, dtype=dtype)
    with SavedTensorMeter() as m: net(x)
    assert m.bytes == e * (B * I + 2 * B * H + H * O)
    with SavedTensorMeter(exclude=net.parameters()) as m: net(x)
    assert m.by_dtype == {str(dtype)[6:]: e * (B * I + 2 * B * H)} and m.count == 3
    with SavedTensorMeter() as m: net(x.requires_grad_())
    assert m.bytes == e * (B * I + 2 * B * H + H * O + I * H)


def test_saved_bytes_whole_storage_once_and_no_address_reuse_undercount():
    w, h = nn.Parameter(torch.randn(4, 3)), torch.randn(4, 8)
    with SavedTensorMeter(exclude=[w]) as m: (h[:, :3] * w).sum() + (h[:, 2:5] * w).sum()
    assert (m.bytes, m.count) == (storage_bytes(h), 1) and tensor_bytes(h[:, :3]) == 48
    net = lgl(torch.float32)
    with SavedTensorMeter(exclude=net.parameters()) as m:
        for _ in range(3): net(torch.randn(B, I)).sum().backward()  # each graph freed before the next
    assert m.bytes == 3 * 4 * (B * I + 2 * B * H)


def test_model_state_bytes_adam_and_tied():
    net = lgl(torch.float32); opt = torch.optim.Adam(net.parameters())
    net(torch.randn(B, I)).sum().backward(); opt.step()
    n = I * H + H + H * O + O
    sb = model_state_bytes(net, opt)
    assert sb["params"] == sb["grads"] == {"float32": 4 * n}
    assert sb["optimizer"] == {"float32": 2 * 4 * n + 4 * 4}  # exp_avg, exp_avg_sq, one fp32 step per param tensor
    assert sb["total"] == 16 * n + 16
    emb, head = nn.Embedding(7, 5), nn.Linear(5, 7, bias=False); head.weight = emb.weight
    assert model_state_bytes(nn.ModuleList([emb, head]))["params"] == {"float32": 7 * 5 * 4}


def test_flop_count_linear():
    lin, x = nn.Linear(I, O), torch.randn(B, I, requires_grad=True)
    assert flop_count(lambda: lin(x).sum()) == dict(forward=2 * B * I * O, backward=4 * B * I * O, total=6 * B * I * O)
    x.requires_grad_(False)  # no dx: backward is dW only
    assert flop_count(lambda: lin(x).sum())["backward"] == 2 * B * I * O


def test_time_ratio_and_peak_memory():
    a = torch.randn(32, 32)
    r = time_ratio(lambda: a @ a, lambda: a @ a @ a, rounds=2, min_block=0.002)
    assert r["a"] > 0 and r["b"] > 0 and r["ratio"] > 0 and len(r["ratios"]) == 2
    # 64 MiB: above glibc's largest dynamic mmap threshold (32 MiB), so the pages are fresh and RSS must grow
    # even late in a test session whose heap already holds freed memory that a smaller block would reuse
    pm = peak_memory(lambda: torch.ones(2**24).sum(), "cpu")
    assert pm["kind"] == "rss" and pm["delta_bytes"] >= 63 * 2**20


def test_figure_env(tmp_path):
    fig, ax = figure("t", "cpu"); ax.plot([0, 1])
    assert device_name("cpu") in fig.get_suptitle()
    assert save_figure(fig, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(json.dumps(env_info("cpu")))["torch"] == torch.__version__


def test_time_ratio_marks_busy_machines_and_overlapping_spreads(monkeypatch):
    import os

    from fewkit import measure

    a = torch.randn(48, 48)
    four = torch.cat([a, a, a, a])
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))  # a machine far busier than its cores
    r = measure.time_ratio(lambda: a @ a, lambda: four @ a, rounds=5, min_block=0.005)
    assert r["clock"] == "thread" and r["threads"] == 1
    assert r["load"] == 64.0 and not r["reliable"] and "busy" in r["why"]
    assert "NOT A RESULT" in measure.fmt_ratio(r)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    r = measure.time_ratio(lambda: a @ a, lambda: four @ a, rounds=15, min_block=0.005)
    assert r["ratio"] > 1.5  # four times the work, in thread CPU time on one thread
    assert r["reliable"] == (not r["iqr"][0] <= 1.0 <= r["iqr"][1])
    assert (r.q1, r.ratio, r.q3) == (r["iqr"][0], r["ratio"], r["iqr"][1]) and r.rounds == 15
    assert json.loads(json.dumps(r))["load"] == 0.0  # a plain dict: spread and load go into JSON as they are
    assert str(r) == measure.fmt_ratio(r)
    short = measure.time_ratio(lambda: a @ a, lambda: four @ a, rounds=5, min_block=0.005)
    assert not short.reliable and "smoke" in short.why  # 5 rounds: not a result, however clear
    assert min(short.calls) >= 3  # a block is several calls, never one


def test_time_ratio_wall_clock_for_work_elsewhere():
    import time

    from fewkit import measure

    # sleeping (like waiting on worker processes) costs this thread no CPU time: only the wall clock sees it
    # (10 ms and 30 ms: a few ms of wake-up latency on a busy machine keeps the ratio between 2 and 4)
    r = measure.time_ratio(lambda: time.sleep(0.01), lambda: time.sleep(0.03), rounds=15, min_block=0.02,
                           clock="wall")
    assert r.clock == "wall" and "wall time" in str(r) and 2 < r.ratio < 4, r
    with pytest.raises(Exception, match="clock"):
        measure.time_ratio(lambda: 0, lambda: 0, clock="process")


def test_live_bytes_sees_what_checkpoints_keep():
    from torch.utils.checkpoint import checkpoint

    from fewkit.measure import live_bytes_step

    n, c, layers = 3, 16, 5  # blocks Linear(c, c) -> tanh on x: (n, c), fp32
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(c, c), nn.Tanh()) for _ in range(layers)]
    ps = [p for b in blocks for p in b.parameters()]
    x = torch.randn(n, c, requires_grad=True)

    def loss(mode):
        h = x
        for b in blocks:
            h = b(h) if mode == "plain" else checkpoint(b, h, use_reentrant=mode == "reentrant")
        return h.sum()

    act, loss_bytes = n * c * 4, 4
    plain = live_bytes_step(lambda: loss("plain"), ps, [x])
    assert plain["forward"] == layers * act + loss_bytes  # every tanh output
    for mode in ("reentrant", "non-reentrant"):  # the layers - 1 boundary activations, nothing else
        assert live_bytes_step(lambda: loss(mode), ps, [x])["forward"] == (layers - 1) * act + loss_bytes, mode
    assert all(p.grad is not None for p in ps)  # the step ran backward
