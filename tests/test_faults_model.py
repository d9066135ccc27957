"""Fault injection on model folders (issue 14, item 4): every broken config, weights file, tokenizer or shard index
gives a FewkitError naming the file and what was expected; nothing in a folder runs code; an architecture fewkit's
BERT does not implement is named as such; a tokenizer or max_len that does not fit the model is caught before use.

Folders are built in tmp_path with fewkit.model_io.save_hf or transformers (random weights, nothing downloaded)."""
import json, os
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file, save_file
from fewkit.core import FewkitError, FewkitDataError
from fewkit.model import BertConfig, BertForMaskedLM
from fewkit.model_io import save_hf, from_hf, load_config, load_pretrained, check_fits
from fewkit.tokenizer import build_vocab, make_tokenizer, load_tokenizer

TEXTS = ["这本书真好看", "服务态度很好，物流也快", "OCNLI 123"]


def _folder(tmp_path: Path, vocab_delta: int = 0, name: str = "m") -> Path:
    "A fewkit-saved backbone folder (config.json, model.safetensors, tokenizer files); vocab_size = len(tok) + delta."
    torch.manual_seed(0)
    tok = make_tokenizer(build_vocab(TEXTS))
    cfg = BertConfig.preset("tiny", vocab_size=len(tok) + vocab_delta, num_hidden_layers=1, max_position_embeddings=32)
    return save_hf(BertForMaskedLM(cfg), tmp_path / name, tokenizer=tok)


def _edit_config(d: Path, **kw) -> None:
    c = json.loads((d / "config.json").read_text())
    c.update(kw)
    (d / "config.json").write_text(json.dumps(c))


def _shard(d: Path, names=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")) -> dict:
    "Split model.safetensors into two shards plus model.safetensors.index.json; return the weight map."
    sd = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    keys = sorted(sd)
    parts = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    wm = {}
    for name, ks in zip(names, parts):
        save_file({k: sd[k] for k in ks}, str(d / name))
        wm.update({k: name for k in ks})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return wm


def _set_index(d: Path, fn) -> None:
    p = d / "model.safetensors.index.json"
    m = json.loads(p.read_text())
    fn(m["weight_map"])
    p.write_text(json.dumps(m))


def _truncate(p: Path, keep: float) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * keep)])


class _Payload:
    "A pickle whose loading writes a marker file: what a malicious pytorch_model.bin does."

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _plant_pickle(d: Path, marker: Path) -> Path:
    "Replace the folder's weights by a torch.save'd state dict that carries the payload."
    (d / "model.safetensors").unlink()
    sd = dict(BertForMaskedLM(load_config(d)).state_dict())
    sd["bert.embeddings.word_embeddings.weight"] = _Payload(marker)
    torch.save(sd, d / "pytorch_model.bin")
    return d / "pytorch_model.bin"


def _hf_folder(tmp_path: Path, kind: str) -> Path:
    "A randomly initialised transformers masked-LM folder of another architecture."
    import transformers as T

    small = dict(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=40)
    cfg, cls = {
        "roberta": (T.RobertaConfig, T.RobertaForMaskedLM),
        "albert": (T.AlbertConfig, T.AlbertForMaskedLM),
        "electra": (T.ElectraConfig, T.ElectraForMaskedLM),
    }[kind]
    extra = dict(embedding_size=16) if kind in ("albert", "electra") else {}
    d = tmp_path / kind
    cls(cfg(**small, **extra)).save_pretrained(d)
    return d


# (id, build(tmp_path) -> (folder, the file the message must name), how it is loaded, what the message must say)
CASES = [
    ("config_garbage", lambda d: (d / "config.json").write_text('{"vocab_size": 60,\n  hidden_size: 1'),
     "config.json:2: expected a JSON object of BERT settings"),
    ("config_list", lambda d: (d / "config.json").write_text("[128, 4, 2]"), "config.json: expected a JSON object"),
    ("config_string_for_number", lambda d: _edit_config(d, hidden_size="128"), "an integer >= 1 in 'hidden_size'"),
    ("config_bool_for_number", lambda d: _edit_config(d, num_hidden_layers=True), "an integer >= 1 in 'num_hidden_layers'"),
    ("config_negative_layers", lambda d: _edit_config(d, num_hidden_layers=-1), "an integer >= 1 in 'num_hidden_layers'"),
    ("config_missing_vocab_size", lambda d: _drop_key(d, "vocab_size"),
     "key 'vocab_size' (a BERT's shape)"),
    ("config_heads_do_not_divide", lambda d: _edit_config(d, num_attention_heads=3), "divisible by num_attention_heads"),
    ("config_dropout_not_a_probability", lambda d: _edit_config(d, hidden_dropout_prob="0.1"), "a probability"),
    ("config_not_utf8", lambda d: (d / "config.json").write_bytes(b'{"x": "\xff\xfe"}'), "config.json: expected"),
    ("config_hidden_act", lambda d: _edit_config(d, hidden_act="relu"), "hidden_act 'gelu'"),
    ("config_relative_positions", lambda d: _edit_config(d, position_embedding_type="relative_key"), "'absolute'"),
    ("config_architecture_not_bert", lambda d: _edit_config(d, architectures=["GPT2LMHeadModel"]), "architectures ['GPT2LMHeadModel'] is not supported"),
    ("config_shape_differs_from_weights", lambda d: _edit_config(d, intermediate_size=256), "shape mismatch"),
    ("safetensors_truncated", lambda d: _truncate(d / "model.safetensors", 0.6), "model.safetensors: expected a complete safetensors file"),
    ("safetensors_header_only", lambda d: _truncate(d / "model.safetensors", 0.01), "model.safetensors: expected a complete safetensors file"),
    ("safetensors_garbage", lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096)), "model.safetensors: expected a complete"),
    ("safetensors_empty", lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors: expected a complete"),
    ("bin_garbage", lambda d: _bin(d, b"PK\x03\x04 definitely not a torch file"), "pytorch_model.bin: expected a torch.save state dict"),
    ("bin_truncated", lambda d: _bin_truncated(d), "pytorch_model.bin: expected a torch.save state dict"),
    ("bin_not_a_dict", lambda d: _bin_obj(d, [torch.zeros(3)]), "pytorch_model.bin: expected a dict of tensor name -> tensor"),
    ("shard_missing", lambda d: _shard(d) and (d / "model-00002-of-00002.safetensors").unlink(),
     "model.safetensors.index.json: lists shard 'model-00002-of-00002.safetensors', which is missing"),
    ("shard_outside_folder", lambda d: _outside(d, "../stolen.safetensors"), "points outside the model folder"),
    ("shard_absolute_path", lambda d: _outside(d, str(d.parent / "abs.safetensors")), "points outside the model folder"),
    ("shard_symlink_out", lambda d: _symlink_out(d), "points outside the model folder"),
    ("shard_index_garbage", lambda d: _shard(d) and (d / "model.safetensors.index.json").write_text("{weight_map"),
     "model.safetensors.index.json:1: expected a shard index"),
    ("shard_index_no_map", lambda d: _shard(d) and (d / "model.safetensors.index.json").write_text('{"metadata": {}}'),
     "model.safetensors.index.json: expected a non-empty 'weight_map'"),
    ("shard_index_not_a_weights_file", lambda d: _shard(d) and _set_index(d, lambda wm: wm.update(x="config.json")),
     "shard file names ending in .safetensors or .bin"),
    ("shard_index_tensor_in_no_shard", lambda d: _shard(d) and _set_index(d, lambda wm: wm.update({"bert.ghost": next(iter(wm.values()))})),
     "tensors of 'weight_map' are in none of the shards"),
]
TOKENIZER_CASES = [
    ("tokenizer_json_garbage", lambda d: (d / "tokenizer.json").write_text("<html>502 Bad Gateway</html>"),
     "tokenizer.json:1: expected a tokenizers JSON file"),
    ("tokenizer_json_truncated", lambda d: _truncate(d / "tokenizer.json", 0.5), "tokenizer.json:"),
    ("tokenizer_json_no_model", lambda d: (d / "tokenizer.json").write_text('{"version": "1.0"}'),
     "tokenizer.json: expected a 'model' with a 'vocab'"),
    ("tokenizer_json_a_list", lambda d: (d / "tokenizer.json").write_text("[]"), "tokenizer.json: expected a tokenizers JSON file"),
    ("tokenizer_json_bad_model", lambda d: _tok_edit(d, lambda j: j["model"].update(type="NoSuchModel")),
     "tokenizer.json: transformers could not load this tokenizer"),
    ("tokenizer_config_garbage", lambda d: (d / "tokenizer_config.json").write_text("{,"),
     "tokenizer_config.json:1: expected a JSON object of tokenizer settings"),
    ("vocab_txt_duplicate", lambda d: _vocab_only(d, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n好\n书\n好\n"),
     "vocab.txt:8: expected each token once"),
    ("vocab_txt_not_utf8", lambda d: _vocab_only(d, "[PAD]\n[UNK]\n好\n".encode("gbk")), "vocab.txt: expected UTF-8 text"),
]


def _drop_key(d: Path, k: str) -> None:
    c = json.loads((d / "config.json").read_text())
    c.pop(k, None)
    (d / "config.json").write_text(json.dumps(c))


def _bin(d: Path, data: bytes) -> None:
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(data)


def _bin_obj(d: Path, obj) -> None:
    (d / "model.safetensors").unlink()
    torch.save(obj, d / "pytorch_model.bin")


def _bin_truncated(d: Path) -> None:
    _bin_obj(d, dict(BertForMaskedLM(load_config(d)).state_dict()))
    _truncate(d / "pytorch_model.bin", 0.5)


def _outside(d: Path, name: str) -> None:
    "The index names a shard outside the folder, and that file exists there and would load."
    wm = _shard(d)
    first = sorted(set(wm.values()))[0]
    target = (d / name).resolve() if not os.path.isabs(name) else Path(name)
    (d / first).rename(target)
    _set_index(d, lambda m: m.update({k: name for k, v in m.items() if v == first}))


def _symlink_out(d: Path) -> None:
    wm = _shard(d)
    first = sorted(set(wm.values()))[0]
    (d / first).rename(d.parent / "elsewhere.safetensors")
    (d / first).symlink_to(d.parent / "elsewhere.safetensors")


def _tok_edit(d: Path, fn) -> None:
    j = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    fn(j)
    (d / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")


def _vocab_only(d: Path, text) -> None:
    (d / "tokenizer.json").unlink()
    p = d / "vocab.txt"
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_model_folder_is_a_clear_error(tmp_path, case):
    _, breaks, want = case
    d = _folder(tmp_path)
    breaks(d)
    with pytest.raises(FewkitError) as e:
        from_hf(d)
    assert want in str(e.value), str(e.value)
    assert str(d) in str(e.value) or str(d.parent) in str(e.value)  # the folder (and its file) is named
    with pytest.raises(FewkitError):
        load_pretrained(d)


@pytest.mark.parametrize("case", TOKENIZER_CASES, ids=[c[0] for c in TOKENIZER_CASES])
def test_broken_tokenizer_is_a_clear_error(tmp_path, case):
    _, breaks, want = case
    d = _folder(tmp_path)
    breaks(d)
    with pytest.raises(FewkitError) as e:
        load_tokenizer(d)
    assert want in str(e.value), str(e.value)
    assert str(d) in str(e.value)
    with pytest.raises(FewkitError):
        load_pretrained(d)


def test_malicious_pickle_runs_nothing(tmp_path):
    # control: the planted file really carries code (plain torch.load would run it)
    live = tmp_path / "live_marker"
    d0 = _folder(tmp_path, name="control")
    torch.load(_plant_pickle(d0, live), weights_only=False)
    assert live.exists()
    marker = tmp_path / "marker"
    d = _folder(tmp_path)
    _plant_pickle(d, marker)
    with pytest.raises(FewkitError) as e:
        from_hf(d)
    assert "pytorch_model.bin: expected a torch.save state dict" in str(e.value)
    assert "weights_only" in str(e.value) or "Unsupported global" in str(e.value) or "Weights only" in str(e.value)
    assert not marker.exists()
    with pytest.raises(FewkitError):
        load_pretrained(d)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["roberta", "albert", "electra"])
def test_other_architecture_is_named(tmp_path, kind):
    d = _hf_folder(tmp_path, kind)
    with pytest.raises(FewkitError) as e:
        from_hf(d)
    msg = str(e.value)
    assert f"model_type {kind!r}" in msg and "config.json" in msg
    assert "fewkit's own BERT loads model_type 'bert'" in msg and "AutoModelForMaskedLM" in msg


def test_bert_folder_from_transformers_loads(tmp_path):
    "The refusals above leave real BERT folders alone."
    from transformers import BertConfig as HFConfig, BertForMaskedLM as HFBert

    torch.manual_seed(1)
    HFBert(HFConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=40)).save_pretrained(tmp_path / "bert")
    assert from_hf(tmp_path / "bert").config.vocab_size == 60
    d = _folder(tmp_path)
    _shard(d)
    assert from_hf(d).config.num_hidden_layers == 1  # a sharded folder with its shards inside loads


def test_tokenizer_larger_than_embedding(tmp_path):
    d = _folder(tmp_path, vocab_delta=-3)
    from_hf(d)  # the weights alone are consistent
    with pytest.raises(FewkitError) as e:
        load_pretrained(d)
    assert "ids but the embedding has vocab_size" in str(e.value) and str(d) in str(e.value)
    with pytest.raises(FewkitError, match="would index past it"):
        check_fits(load_config(d), load_tokenizer(d))


def test_max_len_beyond_positions(tmp_path):
    d = _folder(tmp_path)
    model, tok = load_pretrained(d, max_len=32)
    with pytest.raises(FewkitError, match="max_len 33 is beyond the model's 32 position embeddings"):
        check_fits(model.config, tok, max_len=33)
    with pytest.raises(FewkitError, match="max_position_embeddings in config.json"):
        load_pretrained(d, max_len=512)
