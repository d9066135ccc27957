"Chapter 2a: DeepSpeed ZeRO from fewkit's settings, side by side with fewkit's ZeRO (2 processes, CPU)."
import os, subprocess, sys, textwrap
import pytest
from fewkit.parallel.distributed import run_function
from fewkit.parallel.deepspeed import ds_config
from fewkit.parallel.zero import ZeroSettings

SBS = 'fewkit.doors.parallel:side_by_side'

def test_ds_config_from_settings():
    c = ds_config(ZeroSettings(stage=3, lr=3e-4), rows=2, n=4)
    assert c['zero_optimization'] == {'stage': 3} and c['train_batch_size'] == 8
    assert c['optimizer']['type'] == 'Adam' and c['optimizer']['params']['lr'] == 3e-4

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
    res = run_function(SBS, 2, kwargs=dict(stages=(2, 3), steps=5, rounds=1, k=1), timeout_s=300)[0]
    _check(res, (2, 3))

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
