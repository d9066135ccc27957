"Mixed precision: our loss scaler and fp16/bf16 wrapper against torch.amp.GradScaler and autocast."
import random
import pytest
import torch
from torch import nn
from fewkit.core import FewkitError
from fewkit.efficiency.mixed_precision import (AmpSettings, DynamicLossScaler, MixedPrecision,
                                               state_bytes_per_param)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 1))


def _kinds(seed, n):
    rng = random.Random(seed)
    return [rng.choice(["inf", "nan", "-inf"]) if rng.random() < 0.35 else None for _ in range(n)]


def _data(g):
    x = torch.randn(32, 6, generator=g)
    return x, x[:, :1] - 2 * x[:, 1:2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scaler_trajectory_equals_gradscaler(seed):
    "Random injected overflows, random factors: GradScaler (fp32 model on CPU) and ours give the same scales."
    rng = random.Random(seed)
    kw = dict(init_scale=rng.choice([2.0**16, 1000.0, 3.0]), growth_factor=rng.choice([2.0, 1.7, 3.1]),
              backoff_factor=rng.choice([0.5, 0.3, 0.77]), growth_interval=rng.randint(1, 4))
    model = _mlp(); opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    gs, ours, g = torch.amp.GradScaler("cpu", **kw), DynamicLossScaler(**kw), torch.Generator().manual_seed(seed)
    stepped = []
    opt.register_step_post_hook(lambda *a: stepped.append(True))
    for kind in _kinds(seed, 60):
        x, y = _data(g)
        assert gs.get_scale() == ours.scale
        gs.scale((model(x) - y).pow(2).mean()).backward()
        if kind: model[0].weight.grad[0, 0] = float(kind)
        n = len(stepped); gs.step(opt); gs.update(); opt.zero_grad()
        assert (len(stepped) > n) == (kind is None)   # GradScaler skipped exactly the injected steps
        ours.update(kind is not None)
    assert gs.get_scale() == ours.scale
    assert ours.state_dict() == {k: (v if k != "scale" else float(v)) for k, v in gs.state_dict().items()}


def _run_gradscaler(kinds, **kw):
    "Reference: fp16 model + fp32 masters, GradScaler unscales/checks/steps the masters."
    model = _mlp(); masters = [nn.Parameter(p.detach().clone()) for p in model.parameters()]; model.half()
    opt = torch.optim.AdamW(masters, lr=1e-2); taken = []
    opt.register_step_post_hook(lambda *a: taken.append(len(scales) - 1))
    gs, g, scales = torch.amp.GradScaler("cpu", **kw), torch.Generator().manual_seed(1), []
    for kind in kinds:
        x, y = _data(g)
        scales.append(gs.get_scale())
        gs.scale((model(x.half()).float() - y).pow(2).mean()).backward()
        if kind: model[0].weight.grad[0, 0] = float(kind)
        for p, m in zip(model.parameters(), masters): m.grad = p.grad.float()
        gs.step(opt); gs.update()
        with torch.no_grad():
            for p, m in zip(model.parameters(), masters): p.copy_(m); p.grad = None
    return scales, [i in taken for i in range(len(kinds))], masters


def _run_ours(kinds, **kw):
    model = _mlp(); opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mp = MixedPrecision(model, opt, AmpSettings(dtype="fp16", **kw))
    g, scales, taken = torch.Generator().manual_seed(1), [], []
    for kind in kinds:
        x, y = _data(g)
        scales.append(mp.loss_scale)
        mp.backward((model(x.half()).float() - y).pow(2).mean())
        if kind: model[0].weight.grad[0, 0] = float(kind)
        before = [p.detach().clone() for p in mp.params]
        ok = mp.step(); taken.append(ok); mp.zero_grad()
        if not ok: assert all(torch.equal(a, b) for a, b in zip(before, mp.params))   # skipped = untouched
    assert model[0].weight.dtype == torch.float16 and mp.params[0].dtype == torch.float32
    return scales, taken, mp.params, model, mp


@pytest.mark.parametrize("kw", [dict(init_scale=2.0**10, growth_interval=3),
                                dict(init_scale=1000.0, growth_factor=1.7, backoff_factor=0.3, growth_interval=2)])
def test_fp16_master_weights_equal_gradscaler(kw):
    kinds = _kinds(7, 30)
    a, b = _run_gradscaler(kinds, **kw), _run_ours(kinds, **kw)
    assert a[0] == b[0] and a[1] == b[1]
    assert a[1].count(False) == sum(k is not None for k in kinds)
    assert all(torch.equal(p, q) for p, q in zip(a[2], b[2]))
    assert all(torch.equal(p.float(), q.half().float()) for p, q in zip(b[3].parameters(), b[2]))  # model = masters in fp16


def test_real_overflow_backs_off_until_finite():
    model = _mlp(); opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    mp = MixedPrecision(model, opt, AmpSettings(dtype="fp16", init_scale=2.0**24))
    g, taken = torch.Generator().manual_seed(0), []
    for _ in range(30):
        x, y = _data(g)
        mp.backward((model(x.half()).float() - y).pow(2).mean()); taken.append(mp.step()); mp.zero_grad()
    k = taken.index(True)
    assert k >= 5 and all(taken[k:])
    assert mp.loss_scale == 2.0**24 * 0.5**k   # growth_interval 2000: no growth yet


def test_bf16_autocast_path():
    ref, model = _mlp(), _mlp()
    opt, ref_opt = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    mp = MixedPrecision(model, opt, AmpSettings(dtype="bf16"))
    assert mp.scaler is None and mp.loss_scale == 1.0
    x, y = _data(torch.Generator().manual_seed(0))
    with mp.autocast():
        h = model[0](x); loss = (model(x).float() - y).pow(2).mean()
    assert h.dtype == torch.bfloat16 and model[0].weight.dtype == torch.float32
    mp.backward(loss); assert mp.step()
    rl = (ref(x) - y).pow(2).mean(); rl.backward(); ref_opt.step()
    assert abs(loss.item() - rl.item()) < 2e-2 * rl.item()
    for p, q in zip(model.parameters(), ref.parameters()): torch.testing.assert_close(p, q, atol=2e-2, rtol=2e-2)


def test_state_dict_resume_is_exact():
    kinds = [None, "inf", None, None, None, None]
    full = _run_ours(kinds * 2, init_scale=64.0, growth_interval=2)
    model = _mlp(); opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mp = MixedPrecision(model, opt, AmpSettings(dtype="fp16", init_scale=64.0, growth_interval=2))
    g = torch.Generator().manual_seed(1)
    def run(kinds):
        for kind in kinds:
            x, y = _data(g); mp.backward((model(x.half()).float() - y).pow(2).mean())
            if kind: model[0].weight.grad[0, 0] = float(kind)
            mp.step(); mp.zero_grad()
    run(kinds); sd, osd = mp.state_dict(), opt.state_dict()
    model2 = _mlp(seed=5); opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    mp2 = MixedPrecision(model2, opt2, AmpSettings(dtype="fp16", init_scale=64.0, growth_interval=2))
    mp2.load_state_dict(sd); opt2.load_state_dict(osd)
    model, mp = model2, mp2; run(kinds)
    assert all(torch.equal(p, q) for p, q in zip(full[2], mp.params))
    assert mp.scaler.state_dict() == full[4].scaler.state_dict()


def test_model_state_bytes_16_per_param():
    fp32, fp16 = state_bytes_per_param("fp32"), state_bytes_per_param("fp16")
    assert (fp32["params"], fp32["grads"]) == (4.0, 4.0) and 8.0 <= fp32["optimizer"] < 8.01
    assert (fp16["params"], fp16["grads"]) == (2.0, 2.0) and 12.0 <= fp16["optimizer"] < 12.01


def test_settings_and_deepspeed_section():
    with pytest.raises(FewkitError): AmpSettings(dtype="fp8")
    with pytest.raises(FewkitError): AmpSettings(dtype="fp16", init_scale=1000.0).to_deepspeed_config()
    from deepspeed.runtime.precision_config import DeepSpeedFP16Config
    sec = AmpSettings(dtype="fp16", init_scale=2.0**12, growth_interval=50).to_deepspeed_config()["fp16"]
    ds = DeepSpeedFP16Config(**sec)
    assert ds.enabled and ds.initial_scale_power == 12 and ds.loss_scale_window == 50 and ds.hysteresis == 1
    assert AmpSettings(dtype="bf16").to_deepspeed_config() == {"bf16": {"enabled": True}}
    m = _mlp()
    o = torch.optim.AdamW(m.parameters(), lr=1.0); m(torch.randn(2, 6)).sum().backward(); o.step()
    with pytest.raises(FewkitError): MixedPrecision(m, o, AmpSettings(dtype="fp16"))


def test_bench_quick(tmp_path):
    from fewkit.doors.efficiency import bench_amp
    r = bench_amp(tmp_path, quick=True)
    assert (tmp_path / "amp.png").exists() and set(r["step_seconds"]) == {"fp32", "bf16", "fp16"}
    assert r["bytes_per_param"]["fp16"]["params"] == 2.0 and r["env"]["torch"] == torch.__version__
    assert r["activation_bytes"]["fp16"] < r["activation_bytes"]["fp32"]


def test_skipped_step_is_visible():
    "Issue 14 item 6: a forced inf gradient skips the step: step() is False, the scale halves, nothing else moves."
    import copy
    model = _mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mp = MixedPrecision(model, opt, AmpSettings(dtype="fp16", init_scale=2.0**10), grad_clip=1.0)
    g = torch.Generator().manual_seed(0)
    x, y = _data(g)
    mp.backward((model(x.half()).float() - y).pow(2).mean())
    assert mp.step() is True  # a clean step first, so AdamW holds state to compare
    mp.zero_grad()
    state = copy.deepcopy(opt.state_dict())
    masters = [p.detach().clone() for p in mp.params]
    weights = [p.detach().clone() for p in model.parameters()]
    scale = mp.loss_scale
    x, y = _data(g)
    mp.backward((model(x.half()).float() - y).pow(2).mean())
    model[0].weight.grad[0, 0] = float("inf")
    assert mp.step() is False
    assert mp.loss_scale == scale * 0.5 and mp.skipped == 1
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    for k, st in state["state"].items():
        assert st.keys() == after["state"][k].keys()
        assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(after["state"][k][n])) for n, v in st.items())
    assert all(torch.equal(a, b) for a, b in zip(masters, mp.params))
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert all(m.grad is None for m in mp.params)


def test_state_dict_loads_weights_only(tmp_path):
    "The wrapper's state is plain data: torch.load(weights_only=True) takes it, and the skip count survives."
    model = _mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mp = MixedPrecision(model, opt, AmpSettings(dtype="fp16", init_scale=2.0**40))  # overflows: skips
    x, y = _data(torch.Generator().manual_seed(0))
    mp.backward((model(x.half()).float() - y).pow(2).mean())
    assert not mp.step()
    torch.save(mp.state_dict(), tmp_path / "mp.pt")
    sd = torch.load(tmp_path / "mp.pt", weights_only=True)
    mp2 = MixedPrecision(_mlp(seed=3), torch.optim.AdamW(_mlp().parameters(), lr=1e-2), AmpSettings(dtype="fp16", init_scale=2.0**40))
    mp2.load_state_dict(sd)
    assert mp2.skipped == 1 and mp2.loss_scale == mp.loss_scale
    assert all(torch.equal(a, b) for a, b in zip(mp.params, mp2.params))
    with pytest.raises(FewkitError):
        MixedPrecision(_mlp(), torch.optim.SGD(_mlp().parameters(), lr=1.0), AmpSettings(dtype="bf16")).load_state_dict(sd)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_clip_after_unscale(dtype):
    "SGD at lr 1: the step is minus the clipped true gradient, so its norm is grad_clip whatever the loss scale."
    model = _mlp()
    mp = MixedPrecision(model, torch.optim.SGD(model.parameters(), lr=1.0), AmpSettings(dtype=dtype, init_scale=2.0**8),
                        grad_clip=0.25)
    before = [p.detach().clone() for p in mp.params]
    x, y = _data(torch.Generator().manual_seed(2))
    x = x.half() if dtype == "fp16" else x
    mp.backward((model(x).float() - y - 5).pow(2).mean())
    assert mp.step()
    step = torch.cat([(p - b).flatten() for p, b in zip(mp.params, before)]).norm().item()
    assert abs(step - 0.25) < 1e-5 and mp.grad_norm > 0.25


def test_trainer_holds_schedule_and_marks_skipped_steps():
    "Through fewkit.train.fit: overflowing fp16 steps are marked `skipped` and do not advance the LR schedule."
    from fewkit.masking import mlm_count, mlm_loss_sum
    from fewkit.testing import tiny_bert
    from fewkit.train import TrainSettings, fit

    def batches():
        g = torch.Generator().manual_seed(0)
        while True:
            ids = torch.randint(5, 64, (4, 8), generator=g)
            yield dict(input_ids=ids, labels=ids.masked_fill(torch.rand(4, 8, generator=g) < 0.5, -100))

    amp = AmpSettings(dtype="fp16", init_scale=2.0**24)
    s = TrainSettings(steps=20, lr=1e-3, warmup=0, grad_clip=1.0, out="", amp=amp)
    hist = fit(tiny_bert(seed=1), batches(), mlm_loss_sum, s, count_fn=mlm_count).history
    skipped = [r.get("skipped", False) for r in hist]
    k = skipped.index(False)  # 2**24 overflows fp16: the first steps are skipped until the scale fits
    assert k >= 3, skipped
    assert hist[0]["lr"] == s.lr  # warmup 0: the peak rate first
    for a, b in zip(hist, hist[1:]):
        if a.get("skipped"):
            assert b["lr"] == a["lr"], (a, b)  # held
        else:
            assert b["lr"] < a["lr"], (a, b)  # linear decay, one notch per real step
