"Chapter 2a: ZeRO stages 1-3 from scratch against PyTorch DDP (loss parity, exact bytes, comm volume)."
import pytest
from fewkit.parallel.distributed import run_function
from fewkit.parallel.zero import ZeroSettings, zero_formula_bytes

Z = 'fewkit.doors.parallel:'  # the step-by-step comparison runs live with the doors

def test_formulas_and_deepspeed_config():
    psi = 7_500_000_000  # the paper's Figure 1 (Ψ = 7.5B, N = 64): 120 GB, 31.4 GB, 16.6 GB, 1.9 GB
    got = [zero_formula_bytes(psi, 64, s)['total'] / 1e9 for s in range(4)]
    assert [round(g, 1) for g in got] == [120.0, 31.4, 16.6, 1.9]
    assert zero_formula_bytes(100, 4, 2, 'fp32') == dict(params=400, grads=100, optimizer=200, total=700)
    c = ZeroSettings(stage=3, dtype='bf16', offload_optimizer=True).to_deepspeed_config()
    assert c['zero_optimization']['stage'] == 3 and c['bf16']['enabled']
    assert c['zero_optimization']['offload_optimizer']['device'] == 'cpu'

def _check(res, stages, dtype='fp32', ref='ddp', tol=1e-5):
    for st in stages:
        r = res[st]
        assert len(r['losses']) == len(res[ref]['losses'])
        assert max(abs(a - b) for a, b in zip(r['losses'], res[ref]['losses'])) < tol, (st, r['losses'], res[ref]['losses'])
        assert r['bytes'] == r['formula'], (st, r['bytes'], r['formula'])
        # stage 3 gathers each module's units before its forward and again before its backward: 2Ψ + the
        # reduce-scatter's Ψ; the MLM head uses the tied word embeddings, so their unit is gathered twice more;
        # a unit of embedding tables only is not gathered for its module's backward (`skipped`, 0 at these sizes)
        # stage 3 from the second step on: a table larger than half a bucket used only through nn.Linear /
        # nn.Embedding is in no module's units (`rowed`): each use all-gathers it block by block of rows (a Linear
        # in its forward and its backward, an Embedding in its forward: `row_gathers`)
        assert r['regathered'] == (0 if r['tied_rowed'] else r['tied'])
        want = 2.0
        if st == 3:
            want = 3.0 + (2 * r['regathered'] - r['skipped'] - 2 * r['rowed'] + r['row_gathers']) / r['psi_padded']
        # stages 2-3: a table larger than half a bucket is reduce-scattered once per use as backward reaches it
        # (the tied word embeddings: the head's part, then the embeddings'), so that its gradient is never whole
        want += r['restreamed'] / r['psi_padded'] if st >= 2 else 0.0
        assert abs(r['comm_per_step'] - want) < 1e-9, (st, r['comm_per_step'], want)

@pytest.mark.multiproc
def test_zero_parity_two_processes():
    fp32, bf16, uncapped, bf16_tables = run_function('fewkit.testing:calls', 2, timeout_s=240, args=(
        (Z + 'zero_run', dict(stages=(1, 2, 3), steps=20, vocab=61)),  # odd vocab: padding is exercised
        (Z + 'zero_run', dict(stages=(0, 1, 2, 3), dtype='bf16', steps=6, ddp=False)),
        (Z + 'zero_run', dict(stages=(2, 3), steps=20, vocab=61,  # no caps: every prefetch, many collectives in flight
                              zero_kw=dict(live_numel=10**9, inflight_numel=10**9))),
        (Z + 'zero_run', dict(stages=(0, 1, 2, 3), dtype='bf16', steps=6, ddp=False, vocab=61, hidden=33, heads=1,
                              zero_kw=dict(bucket_numel=500)))))[1]   # bf16, most matrices streamed / read by rows
    _check(fp32, (1, 2, 3))
    _check(uncapped, (2, 3))
    assert uncapped[3]['prefetches'] > 0 and fp32[3]['prefetches'] == 0   # tiny layers: the default cap allows none
    assert fp32[1]['psi_padded'] > fp32[1]['psi']
    _check(bf16, (1, 2, 3), ref=0, tol=1e-3)
    _check(bf16_tables, (1, 2, 3), ref=0, tol=1e-3)
    assert bf16_tables[3]['rowed'] > 0

@pytest.mark.multiproc
def test_zero_peaks_within_one_bucket_of_the_formula_and_below_plain_dp():
    # peak bytes per rank held in forward, backward and step (2nd step, exact: every buffer the engine holds),
    # one rank and two: never above plain DP's peak (stage 0), never below the formula, at most one bucket above it
    rows = run_function(Z + 'zero_peaks', 2, kwargs=dict(ns=(1, 2)), timeout_s=240)[0]
    assert len(rows) == 2 * 4 * 3
    dp = {(r['n'], r['phase']): r['measured'] for r in rows if r['stage'] == 0}
    for r in rows:
        m, f, n = r['measured'], r['formula'], r['n']
        assert m['total'] <= dp[n, r['phase']]['total'], r
        if r['stage'] >= 2:   # staging buffers go once reduced: the end of backward holds the 1/N partitions
            assert r['end_backward']['grads'] == f['grads'] < dp[n, 'backward']['grads'] or n == 1, r
        assert m['optimizer'] == f['optimizer'], r
        assert f['params'] <= m['params'] <= f['params'] + r['bucket_params'], r
        assert f['grads'] <= m['grads'] <= f['grads'] + r['bucket_grads'] * (n + 1) // n, r
        assert m['total'] <= r['bound']['total'], r
        if n == 1:
            assert m == dp[1, r['phase']], r                      # one rank: nothing to partition, DP's bytes
    s3 = {r['phase']: r['measured'] for r in rows if r['stage'] == 3 and r['n'] == 2}
    assert s3['step']['params'] == rows[0]['formula']['params'] // 2   # between uses only the shards stay
    assert s3['forward']['params'] > s3['step']['params']              # ... and units are gathered while used


@pytest.mark.multiproc
def test_zero_peaks_of_the_tiny_preset_within_one_bucket_of_the_formula():
    # the tiny preset's shape, fp32, N = 2: the tied word embeddings (8000 x 128, 55 % of Ψ) are larger than a
    # bucket (2**18 elements, 1 MiB). In every phase each working set stays within one bucket of the formula:
    # parameters (stage 3: one layer gathered, 793,088 B; stages 1-2, the step: one slice of the table's
    # all-gather, 1,048,576 B) and gradients (staging, outputs in flight and the gradient autograd hands whole:
    # 974,464 B stage 1, 982,272 B stages 2-3). Before: stage 3 held the head with the gathered table
    # (4,195,072 B) and the table's whole gradient beside a bucket (5,144,576 B); stage 1 all its (P,) outputs
    # (3,701,120 B); the step the table's (P,) copy (2,048,000 B)
    shape = dict(vocab=8000, hidden=128, layers=4, heads=2)
    rows = run_function(Z + 'zero_peaks', 2, kwargs=dict(ns=(2,), stages=(0, 1, 2, 3), **shape), timeout_s=240)[0]
    dp = {r['phase']: r['measured'] for r in rows if r['stage'] == 0}
    for r in rows:
        m, f, B = r['measured'], r['formula'], r['bucket']
        assert B == 2**18 * 4 and r['big_param'] == (8000 * 128 * 4 if r['stage'] else 0)   # stages 1-3 slice it
        assert f['params'] <= m['params'] <= f['params'] + B, r
        assert f['grads'] <= m['grads'] <= f['grads'] + B, r
        assert m['optimizer'] == f['optimizer'], r
        assert m['total'] <= min(r['bound']['total'], dp[r['phase']]['total']), r
        if r['stage'] in (1, 2):   # nothing gathered: the whole excess is one working set
            assert m['total'] <= f['total'] + B, r
    peak = {r['stage']: r['measured']['total'] for r in rows if r['phase'] == 'backward'}
    assert peak[3] < peak[2] < peak[1] < peak[0], peak


@pytest.mark.multiproc
def test_zero3_gathers_and_reduces_a_big_table_by_rows():
    # from the second step on stage 3 never makes the tied table whole: the head's forward and backward and the
    # embeddings' forward all-gather it block by block of rows, beside at most `live_numel` gathered, one bucket in
    # all; the head's and the embeddings' backward reduce-scatter their parts of its gradient in slices of rows
    # (`_TableLinear`, `_TableEmbedding`). Comm per step: 3Ψ + 2·|table| (the table is reduce-scattered twice)
    shape = dict(vocab=8000, hidden=128, layers=4, heads=2)
    small = dict(stages=(2, 3), steps=4, vocab=61, hidden=33, heads=1, zero_kw=dict(bucket_numel=500))  # odd sizes
    run, small, bypass = run_function('fewkit.testing:calls', 2, timeout_s=240, args=(
        (Z + 'zero_run', dict(stages=(3,), steps=3, **shape)),
        (Z + 'zero_run', small),
        (Z + 'zero_run', dict(small, bypass=True))))[0]
    r = run[3]
    assert max(abs(a - b) for a, b in zip(r['losses'], run['ddp']['losses'])) < 1e-5, run
    assert r['tied_rowed'] and r['rowed'] == r['tied'] == r['restreamed'] == 8000 * 128
    assert r['row_gathers'] == 3 * r['tied']   # the embeddings' forward, the head's forward and backward
    assert abs(r['comm_per_step'] - (3.0 + 2 * r['tied'] / r['psi_padded'])) < 1e-9
    # buckets of 500 elements, most matrices larger than half of one, odd sizes (the sliced units are padded to
    # whole rows): parity, bytes and comm volume exact; the FFN weights (read through `weight_only`, the bias in a
    # fused chain) stream too. With the FFN's input weights read through F.linear instead (`bypass`), their
    # gradients arrive whole and are sliced from there, and stage 3 keeps gathering them with their layer
    _check(small, (2, 3))
    _check(bypass, (2, 3))
    assert small[3]['rowed'] > small[3]['tied'] > 0 and small[3]['handed'] == 0
    assert bypass[3]['handed'] > 0 and bypass[3]['rowed'] == small[3]['rowed'] - bypass[3]['handed']
    assert small[3]['psi_padded'] > small[3]['psi']


@pytest.mark.multiproc
def test_zero_parity_four_processes():
    res = run_function(Z + 'zero_run', 4, kwargs=dict(stages=(1, 2, 3), steps=20), timeout_s=300)
    _check(res[0], (1, 2, 3))
    assert all(r['ddp']['losses'] == res[0]['ddp']['losses'] for r in res)

@pytest.mark.multiproc
def test_zero_and_dp_in_a_group_without_rank_0():
    # ZeRO and DP broadcast the starting weights from the group's first rank, not global rank 0 (which is not in the group)
    res = run_function('fewkit.parallel.zero:zero_subgroup', 3, kwargs=dict(stage=3), timeout_s=180)
    assert res[0] is None
    for r in res[1:]:
        assert abs(r['zero'] - r['ref']) < 1e-6 and abs(r['dp'] - r['ref']) < 1e-6, r


def test_zero_clip_equals_clip_grad_norm_on_one_process():
    # Zero.clip_ (used by fit's parallel='zero') against torch's clip_grad_norm_, fresh random gradients
    import socket
    import torch, torch.distributed as dist
    from fewkit.testing import tiny_bert
    from fewkit.parallel.zero import Zero, ZeroSettings
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        for stage in (1, 2):
            ref, m = tiny_bert(0), tiny_bert(0)
            z = Zero(m, ZeroSettings(stage=stage))
            ids = torch.randint(5, 64, (2, 8))
            for model in (ref, m):
                model(input_ids=ids).float().pow(2).mean().mul(1e3).backward()   # large: clipping is active
            z._finish()
            z._grads_to_masters()                 # one process: the mean gradient is the gradient
            norm = z.clip_(0.5)
            want = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5).item()
            assert abs(norm - want) / want < 1e-5 and want > 0.5
            name = {id(p): n for n, p in m.named_parameters()}; ref_p = dict(ref.named_parameters())
            for u in z.units:                     # one process: the partition is the whole flat unit
                for p in u.params:
                    got = u.mgrad[u.offset[p]:u.offset[p] + p.numel()]
                    exp = ref_p[name[id(p)]].grad.flatten()
                    assert torch.allclose(got, exp, rtol=1e-5, atol=1e-8), (name[id(p)], (got - exp).abs().max())
    finally:
        dist.destroy_process_group()


TRAINER = [dict(stage=s) for s in range(4)] + [dict(stage=s, offload_optimizer=True) for s in range(4)]
TRAINER += [dict(stage=s, micro=2) for s in range(4)] + [dict(stage=1, overlap=False, micro=2)]
# small buckets: most matrices are larger than a bucket, reduce-scattered in slices (accumulation, offload too)
TRAINER += [dict(stage=3, bucket_numel=500), dict(stage=2, bucket_numel=500, micro=2)]
TRAINER += [dict(stage=1, bucket_numel=500, micro=2)]   # stage 1 slices its tables' reduce-scatter and all-gather too
TRAINER += [dict(stage=3, bucket_numel=500, micro=2, offload_optimizer=True)]

@pytest.mark.multiproc
def test_zero_as_the_trainer_uses_it():
    # fit's use on 2 ranks (gloo): scheduler on z.opt, step(max_norm) clipping the global norm, stages 0-3, CPU
    # offload, gradient accumulation; against one process with torch AdamW (no decay on biases/LayerNorm) and
    # clip_grad_norm_ on the whole batch. Resume from full_state_dict + this rank's opt.state_dict is exact.
    res = run_function(Z + 'trainer_parity', 2, kwargs=dict(configs=TRAINER), timeout_s=400)
    assert res[0] == res[1]                      # every rank reports the same global numbers
    for r in res[0]:
        assert len(r['losses']) == 7 and r['max_rel'] < 1e-5, r
        assert r['resume_equal'] and r['keys_equal'], r
        assert r['eval_rel'] < 1e-5 and r['max_weight_diff'] < 1e-5, r
        assert r['released_rel'] < 1e-5, r            # Zero.release() gives back an ordinary model


@pytest.mark.multiproc
def test_zero_bf16_checkpoint_holds_the_fp32_masters():
    res = run_function(Z + 'trainer_parity', 2, kwargs=dict(configs=[dict(stage=s, dtype='bf16') for s in (1, 3)]),
                       timeout_s=300)[0]
    for r in res:
        assert r['resume_equal'] and r['keys_equal'], r        # masters in opt.state_dict: resume is exact
        assert r['max_rel'] < 1e-3 and r['max_weight_diff'] < 2e-2, r   # bf16 compute vs the fp32 reference


def test_zero_without_a_process_group_is_adamw():
    import torch
    from torch import nn
    from fewkit.testing import tiny_bert, mlm_batch
    from fewkit.model import mlm_loss
    from fewkit.parallel.zero import Zero, ZeroSettings, no_decay
    for cfg in (ZeroSettings(stage=3, lr=1e-2, weight_decay=0.1, eps=1e-6),
                ZeroSettings(stage=2, lr=1e-2, weight_decay=0.1, eps=1e-6, offload_optimizer=True)):
        m, ref = tiny_bert(0), tiny_bert(0)
        z = Zero(m, cfg)
        named = list(ref.named_parameters())
        opt = torch.optim.AdamW([dict(params=[p for n, p in named if not no_decay(n, p)], weight_decay=0.1),
                                 dict(params=[p for n, p in named if no_decay(n, p)], weight_decay=0.0)], lr=1e-2, eps=1e-6)
        for s in range(3):
            ids, labels = mlm_batch(s, 2)
            a, b = mlm_loss(m(ids), labels), mlm_loss(ref(ids), labels)
            assert abs(a.item() - b.item()) <= 1e-5 * b.item()
            a.backward(); b.backward()
            z.step(0.5); nn.utils.clip_grad_norm_(ref.parameters(), 0.5); opt.step()
            z.zero_grad(); opt.zero_grad()
        sd, want = z.full_state_dict(), ref.state_dict()
        assert sorted(sd) == sorted(want)
        assert max((sd[k] - want[k]).abs().max().item() for k in want) < 1e-5
    assert z.traffic['to_host'] == 3 * 4 * z.numel() and z.traffic['to_device'] == 3 * 4 * z.numel()
