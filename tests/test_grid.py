"Chapter 2b: the dp × pp × tp grid; 3D training equals one process (4 CPU processes; 8 marked slow)."
import pytest
from fewkit.parallel.distributed import run_function
from fewkit.parallel.grid import grid_ranks, grid_coords

@pytest.mark.parametrize('dp,pp,tp', [(2, 2, 1), (1, 2, 2), (2, 1, 2), (2, 2, 2), (3, 2, 1)])
def test_grid_groups_partition_the_ranks(dp, pp, tp):
    g, n = grid_ranks(dp, pp, tp), dp * pp * tp
    for kind, size in (('tp', tp), ('pp', pp), ('dp', dp)):
        flat = sorted(r for grp in g[kind] for r in grp)
        assert flat == list(range(n)) and all(len(grp) == size for grp in g[kind])
    for r in range(n):
        d, s, t = grid_coords(r, dp, pp, tp)
        assert [x for x in g['tp'] if r in x][0][t] == r and [x for x in g['pp'] if r in x][0][s] == r
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology
    topo = PipeModelDataParallelTopology(num_pp=pp, num_mp=tp, num_dp=dp)
    assert sorted(map(sorted, topo.get_axis_comm_lists('model'))) == sorted(g['tp']) or tp == 1

def _check(res, tol_param=1e-4):
    for i, r in enumerate(res[0]):
        assert max(abs(a - b) for a, b in zip(r['losses'], r['ref_losses'])) < 1e-5, r
        assert max(q[i]['param_diff'] for q in res) < tol_param, r['layout']  # Adam: ~0 grads amplify fp32 noise

@pytest.mark.multiproc
def test_grid_4proc_layouts_and_zero1():
    res = run_function('fewkit.testing:calls', 4, timeout_s=300, args=(
        ('fewkit.doors.parallel:grid_parity', {}),
        ('fewkit.doors.parallel:grid_parity', dict(layouts=((2, 1, 2),), zero1=True))))
    _check([r[0] for r in res]); _check([r[1] for r in res])
    plain, z = res[0][0][2], res[0][1][0]  # layout 2×1×2 without / with ZeRO-1
    assert z['opt_state_floats'] <= plain['opt_state_floats'] // 2 + 16

@pytest.mark.slow
@pytest.mark.multiproc
def test_grid_8proc():
    res = run_function('fewkit.doors.parallel:grid_parity', 8, kwargs=dict(layouts=((2, 2, 2),), steps=2), timeout_s=600)
    _check(res)
