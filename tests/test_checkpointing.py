"Activation checkpointing: bit-identical gradients with dropout on, for every policy and implementation."
import pytest, torch
from fewkit.efficiency.checkpointing import (CheckpointSettings, CheckpointRunner, apply_checkpointing, checkpoint,
    grads_with, checkpoint_table, summarize, segments, _tiny_model, _batch, _loss)
from fewkit.doors.efficiency import bench_checkpointing, demo_checkpointing
from fewkit.core import FewkitError

SEED = int(torch.randint(0, 10_000, ()).item())  # fresh inputs each run; printed on failure

@pytest.fixture(scope='module')
def setup():
    model = _tiny_model(layers=3, vocab=300, hidden=32, seed=SEED)
    batch = _batch(vocab=300, B=2, T=16, seed=SEED + 1)
    return model, batch, grads_with(model, CheckpointSettings('none'), batch, seed=SEED)

@pytest.mark.parametrize('impl', ['fewkit', 'torch', 'torch_reentrant', 'deepspeed'])
@pytest.mark.parametrize('policy', ['every', 'every_k', 'sqrt'])
def test_grads_identical_with_dropout(setup, impl, policy):
    model, batch, ref = setup
    assert model.config.hidden_dropout_prob > 0 and model.config.attention_probs_dropout_prob > 0
    g = grads_with(model, CheckpointSettings(policy, k=2, impl=impl), batch, seed=SEED)
    assert g.keys() == ref.keys()
    bad = [n for n in ref if not torch.equal(g[n], ref[n])]
    assert not bad, f"seed {SEED}: {impl}/{policy} differs in {bad[:3]}"

def test_without_rng_restore_gradients_differ(setup):
    "The parity check can fail: recomputing with fresh dropout masks gives other gradients."
    model, batch, ref = setup
    apply_checkpointing(model, CheckpointSettings('every'))
    model.bert.encoder.layer_runner.ckpt = lambda fn, *a: checkpoint(fn, *a, preserve_rng=False)
    model.zero_grad(set_to_none=True); torch.manual_seed(SEED); _loss(model, batch).backward()
    apply_checkpointing(model, CheckpointSettings('none'))
    assert any(not torch.equal(p.grad, ref[n]) for n, p in model.named_parameters() if n in ref)

def test_rng_stream_after_step_unchanged(setup):
    "The recompute must not shift the RNG stream seen by the rest of training."
    model, batch, _ = setup
    outs = []
    for cfg in (CheckpointSettings('none'), CheckpointSettings('every')):
        apply_checkpointing(model, cfg); torch.manual_seed(SEED); _loss(model, batch).backward()
        outs.append(torch.rand(4))
    apply_checkpointing(model, CheckpointSettings('none'))
    assert torch.equal(*outs)

def test_apply_and_segments():
    m = _tiny_model(layers=2, vocab=300, hidden=32)
    apply_checkpointing(m, CheckpointSettings('sqrt', impl='torch'))
    assert isinstance(m.bert.encoder.layer_runner, CheckpointRunner)
    apply_checkpointing(m, CheckpointSettings('none'))
    assert m.bert.encoder.layer_runner is None
    assert sum(len(s) for s in segments(7, 'every_k', k=3)) == 7
    with pytest.raises(FewkitError): CheckpointSettings(policy='all')

def test_memory_target():
    B, T, H = 2, 32, 64
    rows = checkpoint_table((1, 2, 4), ('none', 'every'), B=B, T=T, hidden=H, vocab=300, rounds=0)
    s = summarize(rows, B, T, H)
    assert s['every_target_ok'], s
    peak = {(r['layers'], r['policy']): r['peak'] for r in rows}
    # without: + one layer's activations per layer; with: + about one layer input per layer
    assert peak[4, 'none'] - peak[1, 'none'] > 10 * (peak[4, 'every'] - peak[1, 'every'])

def test_bench_quick(tmp_path):
    r = bench_checkpointing(tmp_path, quick=True)
    assert (tmp_path / 'checkpointing.png').exists() and r['summary']['every_target_ok']
    assert set(r['impl_time_ratio']) == {'none', 'torch', 'torch_reentrant', 'deepspeed'}
    assert r['smoke'] is True and {'start', 'end'} == set(r['load'])  # a --quick run says it is a smoke run
    assert not any(t['reliable'] for t in r['impl_timing'].values())  # 3 rounds: never reported as a result


@pytest.mark.parametrize('impl', ['fewkit', 'torch', 'torch_reentrant', 'deepspeed'])
def test_live_meter_sees_every_implementations_boundary_bytes(impl):
    "Per-layer checkpointing keeps one layer input (B, T, C) fp32 per layer: one more layer, exactly B*T*C*4 more bytes."
    from fewkit.measure import live_bytes_step
    B, T, H = 2, 16, 32
    kept = []
    for layers in (2, 3):
        model = _tiny_model(layers=layers, vocab=300, hidden=H, seed=SEED).train()
        batch, params = _batch(vocab=300, B=B, T=T, seed=SEED + 1), list(model.parameters())
        apply_checkpointing(model, CheckpointSettings('every', impl=impl))
        kept.append(live_bytes_step(lambda: _loss(model, batch), params)['forward'])
    assert kept[1] - kept[0] == B * T * H * 4, (impl, kept)


def test_impl_table_one_byte_count_for_all_and_the_hooks_blind_spots():
    from fewkit.efficiency.checkpointing import impl_table
    by = {r['impl']: r for r in impl_table(layers=3, B=2, T=16, hidden=32, vocab=300, rounds=0)}
    ck = ['fewkit', 'torch', 'torch_reentrant', 'deepspeed']
    assert len({by[i]['live_forward'] for i in ck}) == 1, by  # the same boundaries kept, whoever keeps them
    assert by['none']['live_forward'] > 2 * by['fewkit']['live_forward']
    assert by['deepspeed']['hooks_forward'] < by['deepspeed']['live_forward']  # ctx attribute: hooks miss it
    assert by['torch']['hooks_peak'] == by['torch']['hooks_forward'] < by['torch']['live_peak']  # inner hooks
    assert all(by[i]['live_peak'] > by[i]['live_forward'] for i in ck)  # the recompute is alive in backward

def test_demo_section(tmp_path):
    md = demo_checkpointing(tmp_path, dict(device=torch.device('cpu')))
    assert (tmp_path / 'checkpointing_bytes.png').exists() and 'checkpointing_bytes.png' in md and '| every |' in md


def test_apply_to_task_model_around_bert():
    "The trainer hands apply_checkpointing whole task models: every fewkit encoder inside gets the runner."
    m = _tiny_model(layers=2, vocab=300, hidden=32)
    task = torch.nn.ModuleDict(dict(backbone=m, head=torch.nn.Linear(32, 2)))
    apply_checkpointing(task, CheckpointSettings('every'))
    assert isinstance(m.bert.encoder.layer_runner, CheckpointRunner)
    apply_checkpointing(task, CheckpointSettings('none'))
    assert m.bert.encoder.layer_runner is None
    with pytest.raises(FewkitError):
        apply_checkpointing(torch.nn.Linear(2, 2), CheckpointSettings('every'))


def test_fewkit_checkpointing_with_a_none_argument_matches_plain_gradients():
    # a segment called with attention_mask=None: the None must come back as None, not as a saved tensor
    from fewkit.efficiency.checkpointing import CheckpointSettings, apply_checkpointing
    from fewkit.testing import mlm_batch, tiny_bert

    ref = tiny_bert(0)
    ck = apply_checkpointing(tiny_bert(0), CheckpointSettings(policy="every", impl="fewkit"))
    x, y = mlm_batch(0, 4)
    ref(x, labels=y).backward()
    ck(x, labels=y).backward()
    for p, q in zip(ref.parameters(), ck.parameters()):
        assert torch.equal(p.grad, q.grad)
