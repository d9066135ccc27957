"Any BERT-family masked LM: transformers' AutoModelForMaskedLM as the library path, beside fewkit's own BERT."

import hashlib
import json
import os

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

from fewkit.core import FewkitError, shipped_backbone
from fewkit.data import load_fewclue, task_info
from fewkit.doors.fewshot import cli_main
from fewkit.fewshot.fewclue import ClsModel
from fewkit.fewshot.pet import PromptModel, collate, label_words, load_backbone, prompt_feats
from fewkit.model_io import load_masked_lm
from fewkit.tokenizer import load_tokenizer

SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def _folder(path, kind: str, seed: int):
    "A randomly initialised transformers masked LM saved with fewkit's tokenizer (nothing downloaded)."
    tok = load_tokenizer(shipped_backbone())
    torch.manual_seed(seed)
    if kind == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=len(tok), max_position_embeddings=256, **SHAPE))
    else:  # RoBERTa's layout: one segment, positions counted from padding_idx + 1
        cfg = RobertaConfig(
            vocab_size=len(tok), max_position_embeddings=258, type_vocab_size=1, pad_token_id=tok.pad_token_id, **SHAPE
        )
        model = RobertaForMaskedLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def fresh_seed():
    seed = int.from_bytes(os.urandom(4), "little")
    print("random weights seed", seed)
    return seed


def test_bert_folder_both_paths_same_pet_scores(tmp_path, fresh_seed):
    d = _folder(tmp_path / "bert", "bert", fresh_seed)
    ours, used_ours = load_masked_lm(d)
    lib, used_lib = load_masked_lm(d, impl="transformers")
    assert (used_ours, used_lib) == ("fewkit", "transformers")
    tok = load_tokenizer(d)
    for task in ("eprstmt", "bustm", "chid"):
        info = task_info(task)
        words = label_words(info, tok)
        feats = prompt_feats(info, tok, load_fewclue(task, "dev_0")[:16], 0, words, 128)
        b = collate(feats)
        with torch.no_grad():
            a = PromptModel(ours.eval(), words).scores(b)
            c = PromptModel(lib.eval(), words).scores(b)
        assert a.shape == c.shape
        assert (a - c).abs().max() < 1e-5, task
        with torch.no_grad():  # fine-tuning's [CLS] states too (the same head weights on both)
            torch.manual_seed(1)
            h1 = ClsModel(ours, 2).eval()
            torch.manual_seed(1)
            h2 = ClsModel(lib, 2).eval()
            ab = {k: b[k] for k in ("ids", "am", "tt")}
            assert (h1.scores(ab) - h2.scores(ab)).abs().max() < 1e-5


def test_roberta_folder_loads_through_the_library(tmp_path, fresh_seed):
    d = _folder(tmp_path / "roberta", "roberta", fresh_seed)
    hf = RobertaForMaskedLM.from_pretrained(d).eval()
    lib, used = load_masked_lm(d)
    assert used == "transformers"
    ids = torch.randint(1, hf.config.vocab_size, (2, 12))
    am = torch.ones_like(ids)
    am[1, 7:] = 0
    with torch.no_grad():
        assert torch.equal(lib.eval()(ids, am, torch.zeros_like(ids)), hf(input_ids=ids, attention_mask=am).logits)
    with pytest.raises(FewkitError, match="model_type 'roberta' is not supported"):
        load_masked_lm(d, impl="fewkit")
    (d / "model.safetensors").unlink()
    with pytest.raises(FewkitError, match="could not load it"):
        load_backbone(d)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_fewclue_cli_on_a_random_folder_records_its_recipe(tmp_path, kind):
    d = _folder(tmp_path / kind, kind, 0)
    out = tmp_path / "out"
    argv = ["--model", str(d), "--task", "eprstmt", "--splits", "0", "--method", "finetune,pet,fuzzy-pet"]
    assert cli_main(argv + ["--max-steps", "4", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    results = json.loads((out / "results.json").read_text())
    digest = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    assert run["backbone"]["sha256"] == {"model.safetensors": digest}
    assert run["backbone"]["model_type"] == kind
    assert run["backbone"]["impl"] == ("fewkit" if kind == "bert" else "transformers")
    assert run["env"]["fewkit"] and run["fewshot"]["max_steps"] == 4
    assert [r["method"] for r in results] == ["finetune", "pet", "fuzzy-pet"]
    for r in results:
        assert r["backbone"] == run["backbone"] and r["fewkit"]["version"] == run["env"]["fewkit"]
        assert r["settings"]["max_steps"] == 4 and r["settings"]["lr"] == run["fewshot"]["lr"]
        assert r["selection"] == "dev" and len(r["dev"]) == len(r["dev_last"]) == 1
        assert r["prompts"]["pattern"] and r["prompts"]["pet_words"]
    md = (out / "results.md").read_text()
    assert all(m in md for m in ("finetune", "pet", "fuzzy-pet", "selected on dev", "dev, last state"))
    assert "### Recipe" in md and digest[:16] in md and f"model_type {kind}" in md  # the recipe beside the numbers
