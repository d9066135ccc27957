"Chapter 2b: the scaling cost model (no processes): FLOPs per token, calibration recovers known constants, A100 layouts."
import math
from fewkit.model import BertConfig
from fewkit.parallel.scaling import Shape, Hardware, step_time, calibrate, predict_a100, allreduce_s

def test_flops_per_token_matches_parameter_count():
    cfg = BertConfig.preset('seed-1.2b'); sh = Shape.of(cfg, 512)
    matmul = cfg.num_hidden_layers * sh.layer_params() + sh.H ** 2 + sh.H * sh.V   # weights that multiply every token
    assert sh.flops_per_token() == 6 * matmul + 12 * sh.L * sh.T * sh.H
    assert abs(sh.flops_per_token() / (6 * cfg.num_parameters()) - 1) < 0.1          # ≈ 6·N

def test_ring_allreduce_formula():
    hw = Hardware(alpha=1e-5, beta=1e-9)
    assert allreduce_s(1e6, 1, hw) == 0
    assert math.isclose(allreduce_s(1e6, 4, hw), 6 * 1e-5 + 1.5 * 1e6 * 1e-9)

def test_calibration_recovers_synthetic_runs():
    sh, B, true = Shape(2, 128, 512, 1000, 32), 4, Hardware(flops=2e9, alpha=3e-4, beta=2e-9, alpha_x=3e-4, beta_x=2e-9,
                                                            cores=2, overlap=0.4, oversub=1.5)
    runs = []
    for s in ('dp', 'tp', 'pp'):
        for n in (1, 2, 4):
            kw = {'dp': dict(dp=n), 'tp': dict(tp=n), 'pp': dict(pp=n, m=4)}[s]
            runs.append(dict(strategy=s, n=n, step_s=step_time(sh, B, true, **kw)['total']))
    probe = {64: allreduce_s(64, 2, true), 1 << 20: allreduce_s(1 << 20, 2, true)}
    hw, rows = calibrate(runs, probe, 2, sh, B, m=4)
    assert max(abs(r['err']) for r in rows) < 1e-3 and hw.overlap == 0.4 and hw.oversub == 1.5

def test_a100_prediction_layouts():
    pred = predict_a100()
    assert [r['gpus'] for r in pred['TP8 in node × DP across']] == [8, 16, 32, 64]
    assert pred['TP8 in node × DP across'][-1]['efficiency'] > 0.9
    assert pred['TP8 × PP across nodes (no DP)'][-1]['efficiency'] < pred['TP8 in node × DP across'][-1]['efficiency']
