"LAMB: step-by-step parity with torch_optimizer.Lamb, trust-ratio behaviour, parameter groups."
import math, pytest, torch
from torch import nn
from fewkit.core import FewkitError
from fewkit.model import BertConfig, BertForMaskedLM
from fewkit.efficiency.lamb import Lamb, OptimSettings, param_groups, build_optimizer, lamb_parity, bench

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
    r = bench(tmp_path, quick=True)
    assert (tmp_path / 'lamb.png').exists()
    assert max(r['parity_max_abs_diff'].values()) < 1e-5
    assert set(r['final_loss']) == {'AdamW B', 'AdamW 4B', 'LAMB 4B'}
