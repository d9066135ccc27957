"""MLM pretraining: masking statistics, a short run that learns, and a saved folder transformers loads."""
import json
import shutil
import time
import pytest
import torch
from fewkit.core import FewkitDataError
from fewkit.doors.pretrain import cli_main
from fewkit.masking import mask_tokens
from fewkit.pretrain.mlm import PretrainSettings, jsonl_texts, pack, pretrain, top_fills
from fewkit.tokenizer import default_tokenizer
from fewkit.train import TrainSettings


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def test_masking_statistics(tok):
    g = torch.Generator().manual_seed(0)
    V = len(tok)
    ids = torch.randint(5, V, (2000, 128), generator=g)
    lengths = torch.randint(20, 127, (2000,), generator=g)
    pad = torch.arange(128)[None] >= lengths[:, None]           # right padding of varying length
    ids[pad] = tok.pad_token_id
    ids[:, 0] = tok.cls_token_id
    ids[torch.arange(2000), lengths] = tok.sep_token_id
    ids[::7, 5] = tok.unk_token_id
    inp, lab = mask_tokens(ids, tok.mask_token_id, tok.all_special_ids, V, generator=g)
    chosen = lab != -100
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    assert not chosen[special].any()                               # never [CLS]/[SEP]/[PAD]/[UNK]
    assert torch.equal(inp[special], ids[special])                 # specials untouched in the input too
    assert torch.equal(lab[chosen], ids[chosen])                   # labels are the originals
    n_cand = (~special).sum(1).float()
    assert ((chosen.sum(1) - (0.15 * n_cand).round()).abs() <= 0).all()  # exactly round(15 %) per row
    m = chosen.sum().item()
    is_mask = (inp[chosen] == tok.mask_token_id).float().mean().item()
    kept = (inp[chosen] == ids[chosen]).float().mean().item()
    rand = 1 - is_mask - kept
    tol = 4 * (0.1 * 0.9 / m) ** 0.5                                # 4 sigma on ~35k choices
    assert abs(is_mask - 0.8) < 2 * tol and abs(kept - 0.1 - 1 / V) < tol and abs(rand - 0.1) < tol
    replaced = chosen & (inp != tok.mask_token_id) & (inp != ids)
    assert not torch.isin(inp[replaced], torch.tensor(tok.all_special_ids)).any()  # random ids are never specials


def test_whole_word_masking_takes_whole_words(tok):
    p = pack(["我们明天去北京看天安门，服务态度很好，这本书真好看。"] * 60, tok, seq_len=64, whole_word=True)
    inp, lab = mask_tokens(p["ids"], tok.mask_token_id, tok.all_special_ids, len(tok),
                           generator=torch.Generator().manual_seed(0), word_start=p["word_start"])
    chosen = lab != -100
    multi = 0
    special = p["ids"] < 5
    ws_all = p["word_start"] | special
    ws_all[:, 1:] |= special[:, :-1]                                # the row's first token after [CLS] starts a word
    for row, ws in zip(chosen, ws_all):
        wid = ws.long().cumsum(0)
        for w in wid[row].unique():
            assert row[wid == w].all()
            multi += int((wid == w).sum() > 1)
    assert multi > 0                                                # some multi-character words were masked
    assert abs(chosen.float().sum() / (p["ids"] >= 5).sum() - 0.15) < 0.03


def test_pack_normalises_and_has_no_padding(tok):
    p = pack(["服务态度很好，价格１２元"] * 10, tok, seq_len=16)
    assert (p["ids"] != tok.pad_token_id).all()
    assert (p["ids"][:, 0] == tok.cls_token_id).all() and (p["ids"][:, -1] == tok.sep_token_id).all()
    assert tok.unk_token_id not in p["ids"]                         # '，' and '１２' map through NFKC


def test_bad_jsonl_line_is_named(tmp_path):
    f = tmp_path / "unlabeled.json"
    f.write_text('{"sentence": "好"}\n{"sentence": \n')
    with pytest.raises(FewkitDataError, match="unlabeled.json:2"):
        jsonl_texts(f)


@pytest.fixture(scope="module")
def run(tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("pre")
    ps = PretrainSettings(max_texts=2500, seq_len=64, n_eval=64, bias_init=False,  # from ln V: a clear drop in 20 steps
                          model=dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128),
                          flop_every=4)  # a GEMM replay every 4 steps: 4 rounds kept (the first warms up)
    ts = TrainSettings(steps=20, batch_size=16, lr=3e-3, warmup=2, eval_every=10, out=str(d / "run"), device="cpu")
    return pretrain(ps, ts, save_to=d / "bb", tok=tok, progress=False), d


def test_twenty_steps_reduce_loss(run):
    rep, _ = run
    losses = [c["loss"] for c in rep["curve"]]
    assert len(losses) == 20
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5         # from ~ln(V)=8.5 down
    evals = [c["eval_acc"] for c in rep["curve"] if "eval_acc" in c]
    assert len(evals) == 2 and 0 <= evals[0] <= 1
    assert rep["flops_per_token"] > 0 and rep["tokens_per_s"] > 0
    fr = rep["flop_rate"]  # the loop's FLOP/s against its own GEMMs' (a ratio of thread CPU times on 1 thread)
    assert fr["rounds"] == 4 and 0.05 < fr["fraction"] < 1.5 and fr["fraction_iqr"][0] <= fr["fraction"]
    assert fr["model_flops_per_s"] > 0 and fr["gemm_flops_per_s"] > 0 and len(fr["load"]) == 2
    assert fr["clock"] == ("thread_time" if torch.get_num_threads() == 1 else "perf_counter")


def test_saved_folder_loads_in_transformers_with_same_logits(run, tok):
    from transformers import AutoTokenizer, BertForMaskedLM
    rep, d = run
    hf = BertForMaskedLM.from_pretrained(d / "bb").eval()
    htok = AutoTokenizer.from_pretrained(d / "bb")
    x = htok(["这本书真[MASK]看", "服务态度很[MASK]"], return_tensors="pt", padding=True)
    assert (x["input_ids"] == tok.mask_token_id).sum() == 2
    ours = rep["_model"].eval()
    with torch.no_grad():
        a = hf(**x).logits
        b = ours(x["input_ids"], attention_mask=x["attention_mask"], token_type_ids=x["token_type_ids"])
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    json.loads((d / "bb" / "pretrain_report.json").read_text())     # report saved beside the weights
    fills = top_fills(ours, tok, "这本书真[MASK]看")
    assert len(fills) == 1 and len(fills[0]) == 5


def test_cli_errors_cleanly(tmp_path, capsys):
    assert cli_main(["--corpus", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main(["--help"])
    assert e.value.code == 0

def test_output_bias_starts_at_unigram_log_frequencies():
    from fewkit.model import BertConfig, BertForMaskedLM
    from fewkit.pretrain.mlm import init_output_bias
    V = 11
    g = torch.Generator().manual_seed(3)
    rows = [(torch.randint(0, V, (9,), generator=g), None) for _ in range(5)]
    m = BertForMaskedLM(BertConfig.preset("tiny", vocab_size=V).replace(num_hidden_layers=1))
    init_output_bias(m, rows, V)
    counts = torch.bincount(torch.cat([r[0] for r in rows]), minlength=V).double() + 1  # add-one smoothed
    assert torch.allclose(m.cls.predictions.bias.double().softmax(0), counts / counts.sum(), atol=1e-6)
    assert m.cls.predictions.decoder.bias is m.cls.predictions.bias  # still the one HF parameter

def test_sinusoid_position_init_and_bad_value(tok):
    from fewkit.pretrain.mlm import build_model, sinusoid_positions_
    w = sinusoid_positions_(torch.empty(64, 16), std=0.02)
    assert abs(float(w.std()) - 0.02) < 1e-6
    assert torch.allclose(w[0, 0::2], torch.zeros(8)) and (w[0, 1::2] > 0).all()   # sin(0) = 0, cos(0) = max
    m = build_model(PretrainSettings(pos_init="sinusoid", local_heads=[], model=dict(num_hidden_layers=1)), tok)
    assert abs(float(m.bert.embeddings.position_embeddings.weight.std()) - 0.02) < 1e-6
    with pytest.raises(Exception, match="pos_init"):
        build_model(PretrainSettings(pos_init="alibi"), tok)

@pytest.mark.multiproc
def test_ddp_pretraining_on_two_processes_equals_one(tmp_path):
    # `fewkit pretrain --nproc 2` (torchrun + DDP, each rank its rows of the same global batch, masks drawn for the
    # whole batch) follows the one-process loss trajectory; rank 0 alone writes the log and the backbone
    args = ["--max-texts", "400", "--seq-len", "32", "--steps", "4", "--batch-size", "4", "--warmup", "1",
            "--eval-every", "0", "--save-every", "0"]
    assert cli_main(args + ["--out", str(tmp_path / "one")]) == 0
    assert cli_main(args + ["--out", str(tmp_path / "two"), "--nproc", "2", "--port", "29517"]) == 0
    read = lambda d: json.loads((tmp_path / d / "train" / "log.json").read_text())  # fit's history, one record a step
    one, two = read("one"), read("two")
    assert [r["step"] for r in two] == [1, 2, 3, 4] and [r["count"] for r in two] == [r["count"] for r in one]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(one, two)) < 1e-5, (one, two)
    assert (tmp_path / "two" / "model.safetensors").exists() and abs(one[-1]["eval"]["acc"] - two[-1]["eval"]["acc"]) < 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # `--out X` writes nothing outside X

def test_local_attention_init_starts_heads_on_their_offsets_and_saves_as_plain_bert(tok, tmp_path):
    # fresh random ids each run: the heads' attention must peak on i + offset whatever the characters;
    # the attention maps are transformers' own, from the saved folder
    from transformers import BertForMaskedLM
    from fewkit.model_io import save_hf
    from fewkit.pretrain.mlm import build_model
    ids = torch.randint(5, len(tok), (2, 96))
    maps = {}
    for name, lh in (("local", [[-1, 1], [-2, 2]]), ("plain", [])):
        m = build_model(PretrainSettings(local_heads=lh), tok).eval()
        save_hf(m, tmp_path / name, tok)
        hf = BertForMaskedLM.from_pretrained(tmp_path / name, attn_implementation="eager").eval()
        with torch.no_grad():
            out = hf(input_ids=ids, output_attentions=True)
            assert torch.allclose(out.logits, m(input_ids=ids), atol=1e-4)
        maps[name] = out.attentions                              # per layer (B, heads, T, T)
    for layer, h, d in ((0, 0, -1), (0, 1, 1), (1, 0, -2), (1, 1, 2)):
        assert maps["local"][layer][:, h].diagonal(d, -2, -1).mean() > 0.9, (layer, h, d)
        assert maps["plain"][layer][:, h].diagonal(d, -2, -1).mean() < 0.1

@pytest.mark.multiproc
def test_zero_pretraining_stages_agree_and_resume_exactly(tmp_path):
    # `fewkit pretrain --nproc 2 --zero S`: fit with fewkit.parallel.zero's Adam. Stages 0-2 partition different
    # state but must take the same steps; a run resumed from step 2 (every rank its own optimizer partition)
    # must continue with the uninterrupted run's losses.
    args = ["--max-texts", "400", "--seq-len", "32", "--steps", "4", "--batch-size", "4", "--warmup", "1",
            "--eval-every", "0", "--save-every", "2", "--nproc", "2"]
    read = lambda d: json.loads((tmp_path / d / "train" / "log.json").read_text())  # fit's history, one record a step
    for st in (0, 1, 2):
        assert cli_main(args + ["--out", str(tmp_path / f"z{st}"), "--zero", str(st), "--port", str(29521 + st)]) == 0
    z = {st: [r["loss"] for r in read(f"z{st}")] for st in (0, 1, 2)}
    assert len(z[0]) == 4
    # the weights moved: the saved backbone against the same seed's fresh model (4 Adam steps at lr <= 2e-3)
    from fewkit.core import seed_everything
    from fewkit.model_io import from_hf
    from fewkit.pretrain.mlm import build_model
    seed_everything(0)
    fresh = build_model(PretrainSettings(seq_len=32), default_tokenizer()).state_dict()
    moved = from_hf(tmp_path / "z0").state_dict()
    k = "bert.encoder.layer.0.attention.self.query.weight"
    assert 1e-4 < (moved[k] - fresh[k]).abs().max() < 0.1
    assert max(abs(a - b) for st in (1, 2) for a, b in zip(z[0], z[st])) < 1e-5, z
    ck = tmp_path / "z2" / "train" / "checkpoints"
    assert (ck / "step_00000004" / "rank001.pt").exists()  # rank 1's optimizer partition, beside rank 0's state.pt
    # forget step 4 (rank 0 and rank 1), resume from step 2
    shutil.rmtree(ck / "step_00000004")
    assert cli_main(args + ["--out", str(tmp_path / "z2"), "--zero", "2", "--port", "29525", "--resume"]) == 0
    again = [r["loss"] for r in read("z2")]
    assert len(again) == 4 and max(abs(a - b) for a, b in zip(again[2:], z[2][2:])) < 1e-6, (again, z[2])
    # a rank whose partition is missing is an error naming the file, not a silent fresh optimizer
    shutil.rmtree(ck / "step_00000004")  # written again by the resumed run
    (ck / "step_00000002" / "rank001.pt").unlink()
    assert cli_main(args + ["--out", str(tmp_path / "z2"), "--zero", "2", "--port", "29526", "--resume"]) != 0


def test_dry_run_prints_the_plan_without_building_the_model(capsys):
    # `fewkit pretrain --dry-run`: per-GPU memory on 8/16/32/64 GPUs and the DeepSpeed config, in seconds (a
    # 1.2B-parameter model is never built)
    t0 = time.perf_counter()
    assert cli_main(["--preset", "seed-1.2b", "--engine", "deepspeed", "--zero", "3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["8"], ["16"], ["32"], ["64"])]
    assert [r[0] for r in rows] == ["8", "16", "32", "64"]
    assert '"stage": 3' in out and '"train_micro_batch_size_per_gpu": 8' in out
    assert time.perf_counter() - t0 < 120


def test_config_from_run_json_reproduces_the_losses(tmp_path):
    # every run writes run.json (argv, resolved settings, versions and device) into --out; `--config run.json`
    # runs the same settings again, with the same losses
    args = ["--max-texts", "400", "--seq-len", "32", "--steps", "3", "--batch-size", "4", "--warmup", "1",
            "--eval-every", "0", "--save-every", "0"]
    assert cli_main(args + ["--out", str(tmp_path / "a")]) == 0
    assert cli_main(["--config", str(tmp_path / "a" / "run.json"), "--out", str(tmp_path / "b")]) == 0
    read = lambda d: [r["loss"] for r in json.loads((tmp_path / d / "train" / "log.json").read_text())]
    assert len(read("a")) == 3 and read("a") == read("b")
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["train"]["steps"] == 3 and run["pretrain"]["seq_len"] == 32 and "torch" in json.dumps(run["env"])


@pytest.mark.multiproc
def test_deepspeed_zero3_pretraining_resumes_exactly_after_sigkill_and_saves_a_transformers_folder(tmp_path):
    # `fewkit pretrain --engine deepspeed --nproc 2 --zero 3 --steps 20`: DeepSpeed's engine inside fit. --out is a
    # folder transformers loads with the same logits (ZeRO-3 holds shards: the saved weights are the gathered ones).
    # The same command SIGKILLed after its step-4 checkpoint takes torchrun, the rank watchers and the ranks with it
    # (none trains on), and `--resume` then gives the uninterrupted run's 20 losses.
    import os
    import signal
    import subprocess
    import sys
    import psutil
    from pathlib import Path
    from transformers import BertForMaskedLM as HFBert
    from fewkit.model_io import from_hf
    args = ["--max-texts", "400", "--seq-len", "32", "--steps", "20", "--batch-size", "4", "--warmup", "1",
            "--eval-every", "0", "--save-every", "2", "--nproc", "2", "--engine", "deepspeed", "--zero", "3"]
    read = lambda d: [r["loss"] for r in json.loads((d / "train" / "log.json").read_text())]
    assert cli_main(args + ["--out", str(tmp_path / "full"), "--port", "29543"]) == 0
    full = read(tmp_path / "full")
    assert len(full) == 20
    ids = torch.randint(5, 100, (2, 16))
    hf = HFBert.from_pretrained(tmp_path / "full").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, from_hf(tmp_path / "full").eval()(ids), atol=1e-4, rtol=1e-4)
    run = tmp_path / "killed"
    exe = Path(sys.executable).parent / "fewkit"
    log = open(tmp_path / "killed.log", "w")
    p = subprocess.Popen([str(exe), "pretrain", *args, "--out", str(run), "--port", "29544"], stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    ck = run / "train" / "checkpoints"
    t0 = time.time()
    while not (ck / "step_00000004" / "manifest.json").exists():
        assert p.poll() is None and time.time() - t0 < 300, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.05)
    tree = psutil.Process(p.pid).children(recursive=True)  # torchrun, its 2 rank watchers and the 2 ranks
    assert len(tree) >= 5, [c.cmdline()[:3] for c in tree]
    os.kill(p.pid, signal.SIGKILL)  # the command alone: everything it started must end with it
    p.wait()
    gone, alive = psutil.wait_procs(tree, timeout=20)
    assert alive == [], [c.cmdline()[:3] for c in alive]
    assert not (ck / "step_00000020").exists()  # killed mid-run, not after it
    assert cli_main(args + ["--out", str(run), "--port", "29545", "--resume"]) == 0
    again = read(run)
    assert len(again) == 20 and max(abs(a - b) for a, b in zip(again, full)) < 1e-6, (again, full)


def test_init_continues_pretraining_from_a_checkpoint(tmp_path):
    # `fewkit pretrain --init DIR`: MLM continues from a folder's weights and tokenizer (e.g. on a task's
    # unlabeled.json with --corpus); the first loss is the backbone's, far below a fresh model's
    from fewkit.core import shipped_backbone
    args = ["--max-texts", "400", "--seq-len", "32", "--steps", "2", "--batch-size", "4", "--warmup", "1",
            "--eval-every", "0", "--save-every", "0"]
    assert cli_main(args + ["--init", str(shipped_backbone()), "--out", str(tmp_path / "cont")]) == 0
    assert cli_main(args + ["--out", str(tmp_path / "fresh")]) == 0
    first = lambda d: json.loads((tmp_path / d / "train" / "log.json").read_text())[0]["loss"]
    assert first("cont") < first("fresh") - 1.0, (first("cont"), first("fresh"))
    run = json.loads((tmp_path / "cont" / "run.json").read_text())
    assert run["pretrain"]["init"] == str(shipped_backbone())
    assert (tmp_path / "cont" / "vocab.txt").read_text() == (shipped_backbone() / "vocab.txt").read_text()


def test_gemm_count_is_exact_and_the_replay_runs_the_same_gemms(tok):
    # model FLOPs = the GEMMs of forward + backward at the real shapes, masked-position-only head: the formula,
    # the recorded GEMMs and torch's FlopCounterMode give one number; the replay runs exactly the recorded GEMMs
    from fewkit.masking import MLMCollate, mlm_loss_sum
    from fewkit.measure import flop_count
    from fewkit.model import BertConfig, BertForMaskedLM
    from fewkit.pretrain.mlm import GemmReplay, _GemmRecorder, model_gemms, train_gemm_flops

    torch.manual_seed(int(time.time()) % 1000)
    L, H, A, I, B, T = 2, 48, 3, 96, 3, 20
    cfg = BertConfig(vocab_size=len(tok), hidden_size=H, num_hidden_layers=L, num_attention_heads=A, intermediate_size=I)
    m = BertForMaskedLM(cfg)
    ids = torch.randint(5, len(tok), (B, T))
    b = MLMCollate(tok, 0.3)([(r, None) for r in ids], torch.Generator().manual_seed(1))
    M = int((b["labels"] != -100).sum())
    ops = model_gemms(m, b)
    assert all(p.grad is None for p in m.parameters())  # recording leaves no gradients behind
    total = sum(o["flops"] for o in ops)
    assert total == train_gemm_flops(cfg, B, T, M) == flop_count(lambda: mlm_loss_sum(m, b))["total"]
    assert len(ops) == 3 * (L * (6 + 2) + 2)  # per layer 6 linears + 2 attention products, the head's 2; x3
    replay = GemmReplay(ops)
    with _GemmRecorder() as again:
        replay()
    assert [(o["func"], o["args"]) for o in again.ops] == [(o["func"], o["args"]) for o in ops]
    assert replay.flops == total
    first = [call[1][1] for call in replay.calls[:3]]  # query, key, value: (N, H) inputs of three addmm
    assert first[0] is first[1] is first[2]  # one h in the step, one tensor in the replay


def test_op_profile_books_the_step_by_class(tok):
    from fewkit.masking import BatchStream, mlm_count, mlm_loss_sum
    from fewkit.pretrain.mlm import build_data, build_model, op_profile

    ps = PretrainSettings(max_texts=600, seq_len=32, n_eval=16, model=dict(num_hidden_layers=1, hidden_size=32,
                                                                              intermediate_size=64))
    rows, _, collate = build_data(ps, tok)
    m = build_model(ps, tok)
    ts = TrainSettings(batch_size=4, warmup=1, device="cpu")
    p = op_profile(m, BatchStream(rows, 4, collate, seed=0), mlm_loss_sum, ts, mlm_count, steps=3)
    ms = p["ms_per_step"]
    assert {"GEMM", "optimizer", "data (batch, masking)", "layernorm", "GELU", "clip"} <= set(ms)
    assert all(v >= 0 for v in ms.values()) and sum(ms.values()) <= p["profiled_ms_per_step"] * 1.05


def test_cli_reports_the_flop_fraction(tmp_path, capsys):
    args = ["--max-texts", "400", "--seq-len", "32", "--steps", "8", "--batch-size", "4", "--warmup", "1",
            "--eval-every", "0", "--save-every", "0", "--flop-every", "2", "--out", str(tmp_path / "o")]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "its GEMMs reach at the model's shapes" in out and "load" in out
    rep = json.loads((tmp_path / "o" / "pretrain_report.json").read_text())
    assert rep["flop_rate"]["rounds"] == 3 and rep["pretrain"]["flop_every"] == 2


def test_sdpa_attention_trains_as_eager_and_is_refused_when_unknown(tok):
    # PretrainSettings.attention='sdpa' (the default) only changes the kernel: the losses of a short run equal the
    # explicit-softmax path's to float rounding, and the GEMMs recorded for the FLOP count are the same
    from fewkit.core import FewkitError
    from fewkit.pretrain.mlm import build_model, model_gemms
    from fewkit.masking import MLMCollate

    ps = PretrainSettings(max_texts=600, seq_len=32, n_eval=16, model=dict(num_hidden_layers=2, hidden_size=32,
                                                                              intermediate_size=64))
    ts = TrainSettings(steps=6, batch_size=4, lr=3e-3, warmup=1, eval_every=0, out="", device="cpu")
    runs = {a: pretrain(ps.replace(attention=a), ts, tok=tok, progress=False) for a in ("eager", "sdpa")}
    assert runs["sdpa"]["model"]["attn_impl"] == "sdpa" and runs["eager"]["model"]["attn_impl"] == "eager"
    le, ls = ([c["loss"] for c in runs[a]["curve"]] for a in ("eager", "sdpa"))
    assert max(abs(a - b) for a, b in zip(le, ls)) < 1e-4, (le, ls)
    b = MLMCollate(tok)([(torch.randint(5, len(tok), (32,)), None)] * 3, torch.Generator().manual_seed(0))
    shapes = [[(o["func"], o["args"]) for o in model_gemms(build_model(ps.replace(attention=a), tok), b)]
              for a in ("eager", "sdpa")]
    assert shapes[0] == shapes[1]
    with pytest.raises(FewkitError, match="attention"):
        build_model(ps.replace(attention="flash"), tok)
