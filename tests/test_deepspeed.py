"Chapter 2a: DeepSpeed ZeRO from fewkit's settings, side by side with fewkit's ZeRO (2 processes, CPU)."
import os, subprocess, sys, textwrap
import pytest
from fewkit.parallel.distributed import run_function
from fewkit.parallel.deepspeed import ds_config, ds_config_like
from fewkit.parallel.zero import bucket_numels
from fewkit.testing import tiny_bert
from fewkit.parallel.zero import ZeroSettings

SBS = 'fewkit.doors.parallel:side_by_side'

def test_ds_config_from_settings():
    c = ds_config(ZeroSettings(stage=3, lr=3e-4), rows=2, n=4)
    assert c['zero_optimization'] == {'stage': 3} and c['train_batch_size'] == 8
    assert c['optimizer']['type'] == 'Adam' and c['optimizer']['params']['lr'] == 3e-4

def test_ds_config_like_fewkit():
    # DeepSpeed's knobs set to what fewkit's Zero does: every tensor partitioned, one unit per collective,
    # at most one module's units gathered (prefetch included), freed after every use, the same overlap
    m = tiny_bert(0, vocab=8000, hidden=128, layers=4)
    whole = bucket_numels(m)  # one unit per module (bucket_numel=0)
    assert whole['unit'] == 8000 * 128 + 64 * 128 + 2 * 128 + 2 * 128   # the embeddings with the tied word embeddings
    assert whole['module'] == whole['unit'] + 128 * 128 + 128 + 2 * 128 + 8000   # the MLM head needs it too
    b = bucket_numels(m, bucket=ZeroSettings().bucket_numel)  # fewkit's default: whole parameters up to 2**18
    assert b['unit'] == 8000 * 128   # the word embeddings alone: a parameter larger than a bucket is its own unit
    assert b['module'] == b['unit'] + 128 * 128 + 128 + 2 * 128 + 8000   # the head needs only the tied table's unit
    zo = ds_config_like(ZeroSettings(stage=3, overlap=False), rows=2, n=2, model=m)['zero_optimization']
    assert zo['stage3_param_persistence_threshold'] == 0 and zo['stage3_max_reuse_distance'] == 0
    assert zo['reduce_bucket_size'] == 2**18 and zo['allgather_bucket_size'] == b['unit']   # slices of one bucket
    z0 = ds_config_like(ZeroSettings(stage=3, bucket_numel=0), rows=2, n=2, model=m)['zero_optimization']
    assert z0['reduce_bucket_size'] == z0['allgather_bucket_size'] == whole['unit']
    assert zo['stage3_prefetch_bucket_size'] == zo['stage3_max_live_parameters'] == b['module']
    assert zo['overlap_comm'] is False
    assert 'stage3_param_persistence_threshold' not in ds_config_like(ZeroSettings(stage=2), 2, 2, m)['zero_optimization']

def _check(res, stages):
    for st in stages:
        r = res[st]
        assert 'deepspeed_error' not in r, r.get('deepspeed_error')
        assert r['max_loss_diff'] < 1e-5, (st, r['fewkit'], r['deepspeed'])
        assert r['ratio'] > 0 and r['fewkit_bytes'] > 0 and r['deepspeed_bytes'] > 0
        # fewkit holds its formula's model states (+ a few bytes of step counters); DeepSpeed at least the
        # parameters and optimizer states (it drops gradients after its step)
        e = r['fewkit_exact']
        assert e['total'] <= r['fewkit_held'] <= e['total'] + 1024
        assert r['deepspeed_held'] >= e['params'] + e['optimizer']

@pytest.mark.multiproc
def test_deepspeed_matches_fewkit_zero():
    res = run_function(SBS, 2, kwargs=dict(stages=(2, 3), steps=5, rounds=1, k=1, like=True), timeout_s=300)[0]
    _check(res, (2, 3))
    assert res[3]['deepspeed_zero']['param_persistence_threshold'] == 0      # DeepSpeed parsed the like-for-like knobs
    # the CPU accelerator forks `numactl` to count local ranks unless LOCAL_SIZE is set (as the deepspeed launcher does)
    assert res[3]['deepspeed_spawns_per_step'] == 0 and res[3]['without_local_size']['spawns_per_step'] >= 1
    for st in (2, 3):   # the interleaved timing reports its spread and the load, and calls 1 round a smoke number
        r = res[st]
        assert r['q1'] <= r['ratio'] <= r['q3'] and r['rounds'] == 1 and r['load'] >= 0
        assert not r['reliable'] and 'smoke' in r['why']

@pytest.mark.slow
@pytest.mark.multiproc
def test_deepspeed_all_stages_and_offload():
    res = run_function(SBS, 2, kwargs=dict(stages=(0, 1), steps=20, rounds=1, k=1), timeout_s=600)[0]
    _check(res, (0, 1))
    off = run_function(SBS, 2, kwargs=dict(stages=(2,), offload=True, steps=10, rounds=1, k=1), timeout_s=900)[0]
    _check(off, (2,)); assert off[2]['deepspeed_optimizer'].startswith('DeepSpeedZeroOptimizer')

@pytest.mark.slow
@pytest.mark.multiproc
def test_fewkit_launch_deepspeed_launcher(tmp_path):
    script = tmp_path / 'ws.py'
    script.write_text(textwrap.dedent('''
        import torch.distributed as dist
        from fewkit.parallel.distributed import init_distributed
        r, n = init_distributed(60); print(f'RANK {r} OF {n}', flush=True)'''))
    code = f'import sys; from fewkit.doors.launch import cli_main; sys.exit(cli_main(["-n", "2", "--deepspeed", {str(script)!r}]))'
    p = subprocess.run([sys.executable, '-c', code], env={**os.environ, 'OMP_NUM_THREADS': '1'},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'RANK 1 OF 2' in p.stdout + p.stderr
