"Chapter 2b: Megatron tensor parallelism on 2 and 4 CPU processes (gloo) against the unsharded model."
import pytest
from fewkit.parallel.distributed import run_function

T = 'fewkit.parallel.tensor_parallel:'

def _check_tp(r, layers=4):
    assert r['logits'] < 1e-5 and r['grads'] < 1e-5, r
    assert (r['fwd_allreduce'], r['bwd_allreduce']) == (2 * layers, 2 * layers)  # one per block, each way
    assert r['comm_bytes'] == 4 * layers * 2 * 8 * 64 * 4  # 4 all-reduces/layer of B·T·C fp32 (B=2, T=8, C=64)

@pytest.mark.multiproc
def test_tp_2proc():
    res = run_function('fewkit.testing:calls', 2, timeout_s=180, args=(
        (T + 'mlp_parity', {}), (T + 'tp_parity', {}), (T + 'tp_parity', dict(layers=2, seed=3, rows=3))))
    mlp, tp, tp2 = res[0]
    assert mlp['out'] < 1e-5 and mlp['grad_x'] < 1e-5 and (mlp['comm']['fwd'], mlp['comm']['bwd']) == (1, 1)
    _check_tp(tp)
    assert tp2['logits'] < 1e-5 and tp2['grads'] < 1e-5 and tp2['fwd_allreduce'] == 4
    assert res[1][1]['loss'] == tp['loss']
    assert tp['param_bytes'] < 867_584  # encoder sharded: fewer bytes than the full model

@pytest.mark.multiproc
def test_tp_4proc():
    res = run_function(T + 'tp_parity', 4, timeout_s=180)
    for r in res: _check_tp(r)
    assert len({r['loss'] for r in res}) == 1

@pytest.mark.multiproc
def test_tp_4proc_indivisible_heads_fails_cleanly():
    from fewkit.parallel.distributed import RankError
    with pytest.raises(RankError, match='not divisible'):
        run_function(T + 'tp_parity', 4, kwargs=dict(heads=2, hidden=64), timeout_s=120)
