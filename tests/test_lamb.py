"LAMB: step-by-step parity with torch_optimizer.Lamb, trust-ratio behaviour, parameter groups."
import math, pytest, torch
from torch import nn
from fewkit.core import FewkitError
from fewkit.model import BertConfig, BertForMaskedLM
from fewkit.efficiency.lamb import Lamb, OptimSettings, param_groups, build_optimizer, fused_supported
from fewkit.doors.efficiency import bench_lamb, lamb_parity

SEED = int(torch.randint(0, 10_000, ()).item())

def test_parity_no_bias_correction():
    assert lamb_parity(steps=20, seed=SEED) < 1e-5, SEED

def test_parity_bias_correction_cancels():
    assert lamb_parity(steps=20, bias_correction=True, eps=1e-30, weight_decay=0.0, model='mlp', seed=SEED) < 1e-5, SEED

def test_parity_detects_definition_change():
    assert lamb_parity(steps=5, bias_correction=True, seed=SEED) > 1e-4

def test_first_step_moves_each_tensor_by_lr():
    torch.manual_seed(SEED)
    ws = [nn.Parameter(torch.randn(6, 5) * s) for s in (1e-2, 1.0, 1e2)]
    w0 = [w.detach().clone() for w in ws]
    for w, s in zip(ws, (1e3, 1.0, 1e-3)): w.grad = torch.randn_like(w) * s
    Lamb(ws, lr=0.05, weight_decay=0.0, max_trust=math.inf).step()
    for w, b in zip(ws, w0): assert abs((w - b).norm() / b.norm() - 0.05) < 1e-4

def test_max_trust_clamps():
    w = nn.Parameter(torch.full((4,), 100.0)); w.grad = torch.ones(4)
    opt = Lamb([w], lr=0.01, weight_decay=0.0, max_trust=10.0); opt.step()
    assert opt.state[w]['trust_ratio'] == 10.0 and torch.allclose(w, torch.full((4,), 100.0 - 0.1), atol=1e-4)

def test_param_groups_and_builder():
    cfg = BertConfig.preset('tiny', vocab_size=300).replace(num_hidden_layers=1, hidden_size=32, intermediate_size=64)
    m = BertForMaskedLM(cfg)
    dec, nodec = param_groups(m, 0.1)
    assert dec['weight_decay'] == 0.1 and nodec['weight_decay'] == 0.0
    ids = {id(p) for g in (dec, nodec) for p in g['params']}
    assert ids == {id(p) for p in m.parameters()} and len(ids) == len(dec['params']) + len(nodec['params'])
    names = {id(p): n for n, p in m.named_parameters()}
    assert all('LayerNorm' in names[id(p)] or names[id(p)].endswith('bias') for p in nodec['params'])
    assert any('LayerNorm.weight' in names[id(p)] for p in nodec['params'])
    assert isinstance(build_optimizer(m, OptimSettings('adamw')), torch.optim.AdamW)
    assert isinstance(build_optimizer(m, OptimSettings('lamb', lr=0.02)), Lamb)
    assert OptimSettings('lamb').to_deepspeed_config()['optimizer']['type'] == 'Lamb'
    assert OptimSettings.from_dict(OptimSettings('lamb').to_dict()) == OptimSettings('lamb')
    with pytest.raises(FewkitError): OptimSettings('sgd')

def test_bench_quick(tmp_path):
    r = bench_lamb(tmp_path, quick=True)
    assert (tmp_path / 'lamb.png').exists()
    assert max(r['parity_max_abs_diff'].values()) < 1e-5
    assert set(r['final_loss']) == {'AdamW B', 'AdamW 4B', 'LAMB 4B'}


def test_build_optimizer_takes_groups_and_tensors():
    lin = nn.Linear(4, 3)
    assert [len(g['params']) for g in param_groups(lin, 0.1, params=[lin.bias])] == [0, 1]
    assert build_optimizer([lin.weight], OptimSettings(weight_decay=0.5)).param_groups[0]['weight_decay'] == 0.5
    opt = build_optimizer(param_groups(lin, 0.1), OptimSettings('lamb', lr=0.02))
    assert isinstance(opt, Lamb) and [g['weight_decay'] for g in opt.param_groups] == [0.1, 0.0]
    with pytest.raises(FewkitError):
        build_optimizer([], OptimSettings())
    assert OptimSettings.from_dict(dict(betas=[0.9, 0.98], fused=True)) == OptimSettings(betas=(0.9, 0.98), fused=True)


def test_fused_adamw_same_steps():
    "fused=True: torch's fused AdamW where the device has it (CPU in torch 2.13), the same steps as the per-tensor one."
    def run(fused):
        torch.manual_seed(SEED)
        m = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 1))
        opt = build_optimizer(m, OptimSettings(lr=1e-2, fused=fused))
        for i in range(4):
            opt.zero_grad()
            m(torch.randn(4, 8, generator=torch.Generator().manual_seed(SEED + i))).pow(2).sum().backward()
            opt.step()
        return opt, list(m.parameters())
    (of, wf), (op, wp) = run(True), run(False)
    assert fused_supported(wf) and of.defaults['fused'] is True and not op.defaults['fused']
    for a, b in zip(wf, wp):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert not fused_supported([torch.zeros(2, dtype=torch.long)])
