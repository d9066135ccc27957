"Chapter 2a: process groups, launcher failure handling, data-parallel parity (2 processes, gloo, CPU)."
import os, subprocess, sys, textwrap, time
import pytest
from fewkit.core import FewkitError
from fewkit.parallel.distributed import RankError, launch_command, read_hostfile, run_function

ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}

def test_launch_command_and_hostfile(tmp_path):
    hf = tmp_path / 'hosts'; hf.write_text('a slots=2\nb slots=2\n')
    assert read_hostfile(hf) == [('a', 2), ('b', 2)]
    c = launch_command('s.py', ['--x', 1], nproc=2, hostfile=hf)
    assert '--max-restarts' in c and c[c.index('--nnodes') + 1] == '2' and c[-3:] == ['s.py', '--x', '1']
    d = launch_command('s.py', nproc=4, deepspeed=True, hostfile=hf)
    assert d[d.index('--hostfile') + 1] == str(hf) and d[d.index('--num_gpus') + 1] == '4'
    (tmp_path / 'bad').write_text('a\n')
    with pytest.raises(FewkitError, match='slots'): read_hostfile(tmp_path / 'bad')

@pytest.mark.multiproc
def test_dp_parity_two_processes():
    res = run_function('fewkit.parallel.distributed:dp_parity', 2, kwargs=dict(steps=2), timeout_s=180)
    for impl in ('naive', 'bucketed', 'torch'):
        v = res[0][impl]
        assert max(abs(a - b) for a, b in zip(v['dp'], v['single'])) < 1e-5, (impl, v)
        assert v['max_grad_diff'] < 1e-5, (impl, v['max_grad_diff'])
        assert res[1][impl]['dp'] == v['dp']
    assert res[0]['bucketed']['log'][0][1] > 0, 'first bucket must leave before backward ends (overlap)'

@pytest.mark.multiproc
def test_failing_rank_helper_raises_its_error():
    t0 = time.time()
    with pytest.raises(RankError, match='exploded on purpose') as e:
        run_function('fewkit.testing:fail_on', 2, args=(1,), timeout_s=90)
    assert e.value.rank == 1 and time.time() - t0 < 90

@pytest.mark.multiproc
def test_hung_rank_times_out():
    # rank 1 sleeps; rank 0's all-reduce must hit the group timeout and the job must end with rank 0's error
    with pytest.raises(RankError) as e:
        run_function('fewkit.testing:fail_on', 2, args=(1, 'hang'), timeout_s=90, group_timeout_s=3)
    assert e.value.rank == 0
    with pytest.raises(FewkitError, match='timed out'):  # hard limit of the helper itself
        run_function('time:sleep', 2, args=(600,), timeout_s=8)

@pytest.mark.multiproc
def test_fewkit_launch_torchrun_failing_rank(tmp_path):
    script = tmp_path / 'train.py'
    script.write_text(textwrap.dedent('''
        import torch, torch.distributed as dist
        from fewkit.parallel.distributed import init_distributed
        r, n = init_distributed(timeout_s=60)
        if r == 1: raise RuntimeError('rank one broke')
        t = torch.ones(1); dist.all_reduce(t)   # rank 0 waits here for a partner that died
        print('unreachable')'''))
    code = f'import sys; from fewkit.doors.launch import cli_main; sys.exit(cli_main(["-n", "2", {str(script)!r}]))'
    t0 = time.time()
    p = subprocess.run([sys.executable, '-c', code], env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and time.time() - t0 < 120
    assert 'rank one broke' in p.stdout + p.stderr and 'unreachable' not in p.stdout


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

@pytest.mark.multiproc
def test_two_nodes_on_loopback(tmp_path):
    # two launches, one process each, meet at a c10d rendezvous on 127.0.0.1: one group of world size 2
    (tmp_path / 'hello_node.py').write_text(textwrap.dedent('''
        import json
        from fewkit.parallel.distributed import init_distributed
        from fewkit.testing import hello
        init_distributed(timeout_s=30)
        print('HELLO', json.dumps(hello()), flush=True)'''))
    port = _free_port()
    env = {**ENV, 'PYTHONPATH': os.pathsep.join([str(tmp_path), ENV.get('PYTHONPATH', '')])}
    def node(k):
        args = ['-n', '1', '--nnodes', '2', '--node-rank', str(k), '--master-addr', '127.0.0.1',
                '--master-port', str(port), '--max-time', '110', '-m', 'hello_node']
        code = 'import sys; from fewkit.doors.launch import cli_main; sys.exit(cli_main(sys.argv[1:]))'
        return subprocess.Popen([sys.executable, '-c', code, *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    nodes = [node(0), node(1)]
    outs = [p.communicate(timeout=150)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs
    import json
    seen = [json.loads(l.split('HELLO ', 1)[1]) for o in outs for l in o.splitlines() if 'HELLO ' in l]
    assert sorted(h['rank'] for h in seen) == [0, 1], outs
    assert all(h['world'] == 2 and h['sum'] == 1.0 for h in seen), seen
    print(f'two nodes on loopback: {time.time() - t0:.1f} s')
