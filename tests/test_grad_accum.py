"Gradient accumulation: same gradients as one big batch, incl. uneven and padded micro-batches."
from functools import partial
import pytest, torch
from fewkit.core import FewkitError, seed_everything
from fewkit.model import BertConfig, BertForMaskedLM
from fewkit.efficiency.grad_accum import (AccumSettings, split_batch, accumulate, padded_mlm_batch, big_batch_grads,
    accum_grads, rel_diff, activation_table, mlm_loss_mean_fn)
from fewkit.masking import mlm_loss_sum, mlm_count
from fewkit.doors.efficiency import bench_accumulation

SEED = int(torch.randint(0, 10_000, ()).item())

@pytest.fixture(scope='module')
def setup():
    cfg = BertConfig.preset('tiny', vocab_size=300).replace(num_hidden_layers=1, hidden_size=32, intermediate_size=64)
    seed_everything(SEED); model = BertForMaskedLM(cfg).eval()
    batch = padded_mlm_batch(B=7, T=20, vocab=300, seed=SEED)
    assert (batch['attention_mask'] == 0).any()  # the padded case
    return model, batch, big_batch_grads(model, batch)

@pytest.mark.parametrize('k', [2, 3, 4, 7])  # 7 items: every k but 7 gives uneven micro-batches
def test_accumulated_grads_equal_big_batch(setup, k):
    model, batch, ref = setup
    d = rel_diff(accum_grads(model, batch, k), ref)
    assert d < 1e-6, f"seed {SEED}, k={k}: rel diff {d}"

def test_per_microbatch_mean_fails(setup):
    model, batch, ref = setup
    assert rel_diff(accum_grads(model, batch, 3, wrong=True), ref) > 1e-3

def test_loss_is_batch_mean(setup):
    model, batch, _ = setup
    with torch.no_grad(): ref = mlm_loss_mean_fn(model)(batch).item()
    got = accumulate(split_batch(batch, 3), partial(mlm_loss_sum, model), mlm_count)
    assert abs(got - ref) < 1e-5 * abs(ref)

def test_split_and_errors():
    mbs = split_batch(dict(a=torch.arange(5), b=torch.ones(5, 2)), 2)
    assert [len(m['a']) for m in mbs] == [3, 2] and torch.equal(torch.cat([m['a'] for m in mbs]), torch.arange(5))
    with pytest.raises(FewkitError): split_batch(dict(a=torch.arange(2)), 3)
    with pytest.raises(FewkitError): accumulate([{}], lambda mb: torch.zeros(()), lambda mb: 0)
    with pytest.raises(FewkitError): AccumSettings(0)

def test_activation_bytes_shrink_with_k():
    rows = activation_table(B=8, T=16, ks=(1, 2, 8), layers=1, hidden=32, vocab=300)
    b = [r['bytes'] for r in rows]
    assert b[0] > 1.8 * b[1] > 1.8 * 4 * 0.9 * b[2]

def test_bench_quick(tmp_path):
    r = bench_accumulation(tmp_path, quick=True)
    assert (tmp_path / 'accumulation.png').exists()
    assert r['parity_rel_diff']['k=7'] < 1e-6 < r['parity_rel_diff']['k=3 per-micro-batch mean (wrong)']
