"Chapter 5 (few-shot): PET scoring, verbalizer checks, training, Fuzzy-PET, self-training, the FewCLUE pipeline."
import json, zipfile
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewkit.core import FewkitError, data_samples
from fewkit.data import FEWCLUE_TASKS, load_fewclue, task_info, review_task
from fewkit.model import BertConfig, BertForMaskedLM
from fewkit.model_io import save_hf, from_hf
from fewkit.tokenizer import build_vocab, make_tokenizer
from fewkit.fewshot.pet import (PATTERNS, FewShotSettings, collate, label_words, mask_logits, prompt_feats,
                                train_pet, verbalizer, word_ids, word_scores, example_fields, text_ids, char_id,
                                train_settings, load_backbone, backbone_or_random, task_settings)
from fewkit.fewshot.fuzzy_pet import (GROUPS, fuzzy_loss, fuzzy_scores, mean_logit_scores, train_method,
                                      usable_groups, word_groups)
from fewkit.fewshot.self_training import SelfTrainSettings, select_pseudo, unlabeled_pool, self_train
from fewkit.fewshot import fewclue as fc
from fewkit.doors.fewshot import cli_main
from fewkit.tokenizer import normalise

ROOT = data_samples() / "fewclue"     # the invented samples: CI has no shared/


@pytest.fixture(scope="module")
def tok():
    "A small char vocabulary: the sample texts, the reviews used below, every pattern and label word."
    texts = [e.text_a + (e.text_b or "") + "".join(e.extra.get("candidates", [])) for t in FEWCLUE_TASKS
             for s in ("train_0", "dev_0", "test", "test_public", "train_few_all", "dev_few_all") for e in load_fewclue(t, s, ROOT)]
    rv = review_task(seed=0, shots=8)
    texts += [e.text_a for v in rv.values() for e in v[:200]] + ["".join(p) for p in PATTERNS.values()]
    texts += ["".join(w for g in word_groups(task_info(t, ROOT)) for w in g) for t in FEWCLUE_TASKS]
    texts += ["".join(g.values()) for gs in GROUPS.values() for g in gs if g]
    return make_tokenizer(build_vocab(texts))


@pytest.fixture(scope="module")
def backbone(tok, tmp_path_factory):
    "A random 2-layer tiny BERT saved as a Hugging Face folder (the path a real checkpoint takes)."
    d = tmp_path_factory.mktemp("bb")
    torch.manual_seed(0)
    save_hf(BertForMaskedLM(BertConfig.preset("tiny", vocab_size=len(tok)).replace(num_hidden_layers=2)), d, tok)
    return d


def test_every_task_encodes_with_its_masks(tok):
    for t in FEWCLUE_TASKS:
        info, exs = task_info(t, ROOT), load_fewclue(t, "train_0", ROOT)
        w = label_words(info, tok)
        for p in range(len(PATTERNS[t])):
            for f in prompt_feats(info, tok, exs, p, w, 40):
                assert len(f["ids"]) <= 40 and f["ids"][0] == tok.cls_token_id and f["ids"][-1] == tok.sep_token_id
                assert [f["ids"][i] for i in f["mpos"]] == [tok.mask_token_id] * (4 if t == "chid" else 2)
                assert 0 <= f["y"] < len(info.labels)
        feats = fc.encode_cls(tok, exs, info.labels, 40)
        assert all(len(f["ids"]) <= 40 and f["ids"][0] == tok.cls_token_id for f in feats)
        if t == "chid":  # one sequence with the blank masked, and the 7 candidates' ids (not 7 sequences)
            assert all([f["ids"][i] for i in f["mpos"]] == [tok.mask_token_id] * 4 for f in feats)
            assert all(len(f["cand"]) == 7 and all(len(c) == 4 for c in f["cand"]) for f in feats)


def test_scoring_shapes_and_values(tok, backbone):
    mlm = from_hf(backbone).eval()
    info = task_info("ocnli", ROOT)
    groups = usable_groups(info, tok)
    w = torch.tensor([word_ids(tok, g) for g in groups])                    # (G, K, M)
    b = collate(prompt_feats(info, tok, load_fewclue("ocnli", "dev_0", ROOT), 0, w, 48))
    with torch.no_grad():
        logits = mask_logits(mlm, b)
        lp, lg = word_scores(logits, w)
    B = b["ids"].shape[0]
    assert logits.shape == (B, 2, len(tok)) and lp.shape == lg.shape == (B, len(groups), 3)
    # a word's score is the sum over its characters of the log-probabilities at the masks
    ref = logits.log_softmax(-1)[torch.arange(B), 0, w[1, 2, 0]] + logits.log_softmax(-1)[torch.arange(B), 1, w[1, 2, 1]]
    torch.testing.assert_close(lp[:, 1, 2], ref)
    # chid: every example scores its own 7 candidates at 4 masks
    chid = task_info("chid", ROOT)
    bc = collate(prompt_feats(chid, tok, load_fewclue("chid", "dev_0", ROOT), 0, None, 64))
    with torch.no_grad():
        lpc, _ = word_scores(mask_logits(mlm, bc), bc["cand"][:, None])
    assert bc["cand"].shape[1:] == (7, 4) and lpc.shape == (bc["ids"].shape[0], 1, 7)


def test_verbalizer_words_must_be_single_tokens(tok):
    with pytest.raises(FewkitError, match="not single tokens"):
        word_ids(tok, ["很好", "𪚥𪚥"])                 # a character the vocabulary lacks
    with pytest.raises(FewkitError, match="differ in length"):
        word_ids(tok, ["很好", "差"])
    info = task_info("eprstmt", ROOT)
    with pytest.raises(FewkitError, match="not single tokens"):
        label_words(info, tok, [["很好", "𪚥𪚥"]])


def test_fuzzy_combinations_match_their_definitions():
    torch.manual_seed(1)
    lp, lg, y = torch.randn(6, 3, 4).log_softmax(-1), torch.randn(6, 3, 4), torch.randint(4, (6,))
    torch.testing.assert_close(fuzzy_scores(lp, lg).exp(), lp.exp().sum(1))          # summed probabilities
    torch.testing.assert_close(fuzzy_loss(lp, lg, y), torch.stack([F.cross_entropy(lp[:, g], y) for g in range(3)]).mean())
    torch.testing.assert_close(mean_logit_scores(lp, lg), lg.sum(1) / 3)
    for t in FEWCLUE_TASKS:
        gs = word_groups(task_info(t, ROOT))
        assert t == "chid" or (gs[0] == verbalizer(task_info(t, ROOT)) and all(len(set(g)) == len(g) for g in gs))
    assert word_groups(task_info("ocnli", ROOT))[1:] == [["蕴含", "中性", "矛盾"], ["包含", "中立", "反向"]]


@pytest.mark.parametrize("method", ["pet", "fuzzy", "finetune"])
def test_training_on_a_toy_task_reduces_loss(tok, backbone, method):
    info, data = task_info("reviews"), review_task(seed=0, shots=8)
    cfg = FewShotSettings(epochs=10, batch_size=16, max_len=40, lr=5e-4)
    if method == "finetune": _, h = fc.train_finetune(from_hf(backbone), tok, info, data["train"], cfg)
    else: _, h = train_method(from_hf(backbone), tok, info, data["train"], cfg, method)
    assert np.mean(h["losses"][-3:]) < np.mean(h["losses"][:3]) - 0.05, h["losses"]


def test_auxiliary_mlm_loss_enters_training(tok, backbone):
    info, data = task_info("reviews"), review_task(seed=0, shots=8)
    cfg = FewShotSettings(epochs=1, min_steps=3, max_steps=3, batch_size=8, max_len=40, mlm_weight=0.5)
    _, h = train_pet(from_hf(backbone), tok, info, data["train"], cfg, unlabeled=data["test"][:16])
    _, h0 = train_pet(from_hf(backbone), tok, info, data["train"], cfg.replace(mlm_weight=0.0))
    assert all(np.isfinite(h["losses"])) and abs(h["losses"][0] - h0["losses"][0]) > 1e-3
    assert all(r["parts"]["mlm"] > 0 for r in h["history"]) and all("parts" not in r for r in h0["history"])


def test_pseudo_labels_are_confident_and_balanced():
    probs = torch.tensor([[.9, .1], [.8, .2], [.7, .3], [.35, .65], [.2, .8], [.45, .55]])
    sel = select_pseudo(probs, per_class=5, min_conf=0.6)
    assert sorted(sel) == [(0, 0), (1, 0), (3, 1), (4, 1)]         # 2 per class: the rarer class sets the count


def test_unlabeled_pool_falls_back_to_other_splits(tmp_path):
    # cluewsc's unlabeled.json is empty: the pool is the other splits' texts, never train_0/dev_0's
    d = tmp_path / "cluewsc"; d.mkdir()
    for s in ("train_0", "dev_0", "unlabeled", "dev_few_all"):
        (d / f"{s}.json").write_bytes((ROOT / "cluewsc" / f"{s}.json").read_bytes())
    lines = (ROOT / "cluewsc" / "train_0.json").read_text(encoding="utf-8").splitlines(keepends=True)
    other = json.loads(lines[0]); other["text"] = "小明把书给了小红，因为她想看。"
    other["target"] = {"span1_index": 6, "span1_text": "小红", "span2_index": 11, "span2_text": "她"}
    (d / "train_few_all.json").write_text("".join(lines) + json.dumps(other, ensure_ascii=False) + "\n", encoding="utf-8")
    u = unlabeled_pool("cluewsc", 0, tmp_path)
    assert "other splits" in u["source"] and all(e.label is None for e in u["examples"])
    assert [e.text_a for e in u["examples"]] == [other["text"]] and u["hidden"] == [other["label"]]
    assert unlabeled_pool("eprstmt", 0, ROOT)["source"] == "unlabeled.json"


def test_pipeline_smoke_and_submission(tok, backbone, tmp_path):
    load = lambda: from_hf(backbone)
    cfg = FewShotSettings(epochs=1, min_steps=2, max_steps=2, max_len=48, n_evals=2)
    res = [fc.run_task(load, tok, "chid", m, cfg, ROOT, splits=[0]) for m in ("finetune", "pet")]
    res.append(fc.run_task(load, tok, "ocnli", "fuzzy-pet", cfg, ROOT, splits=[0], self_training=SelfTrainSettings(generations=1, per_class=1, min_conf=0.0)))
    assert all(0 <= r["dev_mean"] <= 1 and "test_public_acc" in r for r in res)
    assert [h["generation"] for h in res[-1]["generations"][0]] == [0, 1]
    # selected on dev: recorded as such, with the last state's dev score beside the selected state's
    for r in res:
        assert r["selection"] == "dev" and len(r["dev_last"]) == 1 and len(r["test_public_acc_per_split"]) == 1
    for r in res[:2]:  # plain runs: 2 steps, dev evaluated at steps 1 and 2, the better kept
        assert r["selected_steps"][0] in (1, 2) and r["dev"][0] >= r["dev_last"][0] - 1e-6
        if r["selected_steps"][0] == 2:
            assert abs(r["dev"][0] - r["dev_last"][0]) < 1e-6
    files = fc.save_results(res, tmp_path, ROOT, "random tiny")
    assert files["validated_pet"] == {"chid": 4} and files["validated_fuzzy-pet+st"] == {"ocnli": 4}
    # finetune and pet both ran on chid: their paired comparison is in results.md and comparisons.json
    comps = json.loads(open(files["comparisons"]).read())
    assert [(c["a"], c["b"], c["task"]) for c in comps] == [("finetune", "pet", "chid")]
    assert comps[0]["low"] <= comps[0]["diff"] <= comps[0]["high"] and "Paired comparisons" in (tmp_path / "results.md").read_text()
    # one task of nine is a partial submission: recorded and said in results.md, never passed off as whole
    assert files["partial_pet"] == [t for t in FEWCLUE_TASKS if t != "chid"]
    assert "Partial submission** `pet/fewclue_submission.zip`: 1 of 9 tasks" in (tmp_path / "results.md").read_text()
    with zipfile.ZipFile(files["zip_pet"]) as z:
        rows = [json.loads(l) for l in z.read("chidf_predict.json").decode().splitlines()]
    assert [r["id"] for r in rows] == [e.extra["id"] for e in load_fewclue("chid", "test", ROOT)]
    assert all(set(r) == {"id", "answer"} and r["answer"] in range(7) for r in rows)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z: z.writestr("chidf_predict.json", json.dumps(rows[0]) + "\n")
    with pytest.raises(FewkitError, match="4 lines"): fc.validate_submission(bad, ROOT)


def test_cli(backbone, tmp_path):
    rc = cli_main(["--task", "cluewsc", "--method", "pet", "--model", str(backbone), "--data", str(ROOT),
                      "--out", str(tmp_path), "--max-steps", "2", "--max-len", "48", "--select", "0", "--splits", "0"])
    assert rc == 0 and (tmp_path / "results.md").exists() and (tmp_path / "pet" / "fewclue_submission.zip").exists()
    assert "cluewsc" in (tmp_path / "results.md").read_text(encoding="utf-8")
    assert cli_main(["--task", "nope", "--model", str(backbone)]) == 2
    assert cli_main(["--task", "eprstmt", "--model", str(tmp_path / "missing")]) == 2


def test_fewshot_recipe_as_trainer_settings():
    # 32 examples, batch 16, 10 epochs = 20 steps < min_steps 30; 10 % warm-up; dev at 15 and 30; clip 1.0
    s = train_settings(FewShotSettings(n_evals=2), 32, select=True)
    assert (s.steps, s.warmup, s.eval_every, s.select, s.grad_clip, s.weight_decay, s.out) == (30, 3, 15, "acc", 1.0, 0.01, "")
    assert train_settings(FewShotSettings(), 928).steps == 400 and train_settings(FewShotSettings(), 8).batch_size == 8
    assert task_settings("csldcp", FewShotSettings()).max_steps == 150


def test_one_normaliser(tok):
    # PET's ids come from fewkit.tokenizer.normalise (NFKC + lower case), not a copy of it
    s = "好评！ＡＢＣ，１２３？"
    assert normalise(s) == "好评!abc,123?"
    assert text_ids(tok, s) == tok(normalise(s), add_special_tokens=False)["input_ids"]
    assert char_id(tok, "，") == char_id(tok, ",")


def test_finetune_is_seeded_before_its_head(tok, backbone):
    # issue 16: the [CLS] head was built before seeding, so two runs with the same seed differed
    info, data = task_info("reviews"), review_task(seed=0, shots=8)
    cfg = FewShotSettings(epochs=1, min_steps=3, max_steps=3, batch_size=8, max_len=40, seed=5)
    runs = []
    for _ in range(2):
        torch.manual_seed(len(runs) + 123)  # whatever the global RNG holds before
        m, h = fc.train_finetune(from_hf(backbone), tok, info, data["train"], cfg)
        runs.append((h["losses"], m.head.weight.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_backbone_loader(backbone, tmp_path):
    load, t, name = load_backbone(backbone)
    assert load() is not load() and name == backbone.name
    with pytest.raises(FewkitError, match="no masked-LM checkpoint"):
        load_backbone(tmp_path)
    assert backbone_or_random(tmp_path)[2].startswith("RANDOM")


def test_a_missing_protocol_split_is_an_error_not_skipped(backbone, tmp_path, capsys):
    # data_samples has split 0 only: without --splits the 5-split protocol must refuse, naming the missing file
    rc = cli_main(["--task", "cluewsc", "--method", "pet", "--model", str(backbone), "--data", str(ROOT),
                   "--out", str(tmp_path), "--max-steps", "2"])
    assert rc != 0
    assert "train_1.json" in capsys.readouterr().err


def test_the_selected_states_dev_predictions_are_not_computed_twice(tok, backbone):
    # with dev selection, the selected state's dev scores come from its evaluation: they equal a fresh prediction
    info, data = task_info("reviews"), review_task(seed=0, shots=8)
    cfg = FewShotSettings(epochs=1, min_steps=4, max_steps=4, batch_size=8, max_len=40, n_evals=2)
    m, h = train_method(from_hf(backbone), tok, info, data["train"], cfg, "pet", dev=data["dev"])
    assert h["best_step"] in (2, 4) and h["dev_scores"].shape == (len(data["dev"]), 2)
    again = fc.predict_probs(m, tok, info, data["dev"], cfg)
    torch.testing.assert_close(h["dev_scores"].softmax(-1), again, rtol=0, atol=0)
    _, h0 = train_method(from_hf(backbone), tok, info, data["train"], cfg.replace(n_evals=0), "pet", dev=data["dev"])
    assert h0["dev_scores"] is None  # no selection: nothing was evaluated, run_split predicts dev itself


def test_bf16_autocast_in_fewshot_training_and_prediction(tok, backbone):
    info, data = task_info("reviews"), review_task(seed=0, shots=8)
    cfg = FewShotSettings(epochs=1, min_steps=3, max_steps=3, batch_size=8, max_len=40)
    assert train_settings(cfg.replace(amp="bf16"), 32).amp.dtype == "bf16" and train_settings(cfg, 32).amp.dtype == "fp32"
    with pytest.raises(FewkitError, match="amp must be"):
        FewShotSettings(amp="fp16")
    seen = []
    m32, h32 = train_pet(from_hf(backbone), tok, info, data["train"], cfg)
    m16, h16 = train_pet(from_hf(backbone), tok, info, data["train"], cfg.replace(amp="bf16"))
    assert all(np.isfinite(h16["losses"])) and h16["losses"] != h32["losses"]  # computed in bf16, not fp32
    assert np.allclose(h16["losses"], h32["losses"], atol=0.05)  # the same training, to bf16's precision
    hook = m16.mlm.cls.register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
    p16 = fc.predict_probs(m16, tok, info, data["dev"][:16], cfg.replace(amp="bf16"))
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16} and p16.dtype == torch.float32
    torch.testing.assert_close(p16, fc.predict_probs(m16, tok, info, data["dev"][:16], cfg), atol=0.03, rtol=0)


def test_emulated_bf16_is_said_once(monkeypatch, caplog):
    import fewkit.fewshot.pet as pet
    import fewkit.efficiency.mixed_precision as mp
    for mod in (pet, mp):  # a CPU without AVX512-BF16/AMX
        monkeypatch.setattr(mod, "native_bf16", lambda device=None: False)
    monkeypatch.setattr(pet, "_EMULATED", set())
    cfg = FewShotSettings(amp="bf16", device="cpu")
    with caplog.at_level("WARNING", logger="fewkit.fewshot"):
        assert [pet.fewshot_amp(cfg) for _ in range(3)] == ["bf16"] * 3  # asked for: kept, and said
    assert sum("emulated" in r.getMessage() for r in caplog.records) == 1
    assert pet.fewshot_amp(FewShotSettings(amp="auto", device="cpu")) == "fp32"  # auto: bf16 only in hardware
