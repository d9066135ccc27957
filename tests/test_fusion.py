"Kernel fusion: every fused variant of bias+GELU+dropout+residual equals eager, alone and inside the fewkit BERT."
import pytest
import torch
import torch.nn.functional as F
from fewkit.core import FewkitError
from fewkit import model as fkm
from fewkit.efficiency.fusion import (FusionSettings, apply_fusion, bert_loss_grads, chain_bytes, chain_eager,
                                      chain_grads, chain_variants, dropout_mask, gelu_grad)


def test_dropout_mask_is_f_dropout():
    x = torch.randn(7, 33)
    for p in (0.1, 0.5, 1.0):
        st = torch.get_rng_state(); ref = F.dropout(x, p, True)
        torch.set_rng_state(st); m = dropout_mask(x, p)
        assert torch.equal(x * m, ref)
    assert dropout_mask(x, 0.1, training=False) is None and dropout_mask(x, 0.0) is None


def test_gelu_grad_formula():
    t = torch.randn(1000, dtype=torch.float64, requires_grad=True) * 4
    t.retain_grad(); F.gelu(t).sum().backward()
    torch.testing.assert_close(gelu_grad(t.detach()), t.grad, atol=1e-12, rtol=0)


def test_chain_variants_forward_backward_equal_eager():
    "Fresh random inputs, fixed dropout mask: out and grads of y, bias, residual within fp32 tolerance."
    torch.manual_seed(123)
    n, h = 48, 40
    args = (torch.randn(n, h) * 3, torch.randn(h), torch.randn(n, h), dropout_mask(torch.empty(n, h), 0.2), torch.randn(n, h))
    ref = chain_grads(chain_eager, *args)
    for name, fn in chain_variants().items():
        got = chain_grads(fn, *args)
        for a, b in zip(got, ref): torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


def test_chain_bytes_counts():
    assert chain_bytes(10) == 10 * 4 * 10 and chain_bytes(10, fused=True) == 4 * 4 * 10
    assert chain_bytes(10, backward=True) == 7 * 4 * 10 and chain_bytes(10, fused=True, backward=True) == 4 * 4 * 10
    assert chain_bytes(10, itemsize=2) == chain_bytes(10) // 2


@pytest.mark.parametrize("impl", ["jit", "autograd", "compile"])
def test_bert_fused_equals_eager_dropout_on(impl):
    ref_loss, ref_g = bert_loss_grads("none", seed=3)
    loss, grads = bert_loss_grads(impl, seed=3)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_g.keys() and len(grads) > 10
    for k in ref_g: torch.testing.assert_close(grads[k], ref_g[k], atol=1e-5, rtol=1e-4, msg=k)
    other_loss, _ = bert_loss_grads("none", seed=4)
    assert not torch.equal(other_loss, ref_loss)      # the comparison is sensitive to the dropout stream


def test_apply_fusion_swaps_and_restores():
    m = fkm.BertForMaskedLM(fkm.BertConfig.preset("tiny", vocab_size=32).replace(num_hidden_layers=2))
    apply_fusion(m, FusionSettings("autograd"))
    lay = m.bert.encoder.layer[1]
    assert lay.intermediate.bias_act is not fkm.bias_gelu and lay.output.bias_dropout_add is not fkm.bias_dropout_add
    assert lay.attention.output.bias_dropout_add is lay.output.bias_dropout_add
    apply_fusion(m, FusionSettings("none"))
    assert lay.intermediate.bias_act is fkm.bias_gelu and lay.attention.output.bias_dropout_add is fkm.bias_dropout_add
    with pytest.raises(FewkitError): FusionSettings("triton")
    with pytest.raises(FewkitError): apply_fusion(torch.nn.Linear(2, 2), FusionSettings("jit"))


def test_eval_mode_no_dropout():
    torch.manual_seed(0)
    m = fkm.BertForMaskedLM(fkm.BertConfig.preset("tiny", vocab_size=32).replace(num_hidden_layers=1)).eval()
    ids = torch.randint(5, 32, (2, 8))
    ref = m(ids)
    out = apply_fusion(m, FusionSettings("autograd"))(ids)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_bench_quick(tmp_path):
    from fewkit.doors.efficiency import bench_fusion
    r = bench_fusion(tmp_path, quick=True)
    assert (tmp_path / "fusion.png").exists() and set(r["largest"]) == {"eager", "compile", "jit", "autograd"}
    assert r["compile_first_call_s"] > 0 and r["bandwidth_GBps"] > 0


@pytest.mark.slow
def test_demo_section(tmp_path):
    from fewkit.doors.efficiency import demo_fusion
    md = demo_fusion(tmp_path, dict(device=torch.device("cpu")))
    assert (tmp_path / "fusion_demo.png").exists() and "| autograd |" in md and "IQR" in md
