"Parity of fewkit's BERT with transformers' BertForMaskedLM, and checkpoint round trips."
import torch, pytest
from transformers import BertConfig as HFConfig, BertForMaskedLM as HFBert, BertForPreTraining
from fewkit.core import FewkitError
from fewkit.model import BertConfig, BertForMaskedLM, to_hf, mlm_loss
from fewkit.model_io import from_hf, save_hf


def _hf(seed, **kw):
    torch.manual_seed(seed)
    c = dict(vocab_size=211, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
             max_position_embeddings=40)
    return HFBert(HFConfig(**{**c, **kw})).eval()


def _inputs(seed, V=211, B=4, T=23):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    att = (torch.rand(B, T, generator=g) > 0.2).long(); att[:, 0] = 1
    tt = (torch.rand(B, T, generator=g) > 0.5).long()
    return ids, att, tt


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_logits_and_grads_match_hf(seed, impl):
    hf = _hf(seed)
    ours = from_hf(hf)
    ours.config.attn_impl = impl
    for layer in ours.bert.encoder.layer: layer.attention.self.impl = impl
    ours.eval()
    ids, att, tt = _inputs(seed + 10)
    a = hf(input_ids=ids, attention_mask=att, token_type_ids=tt).logits
    b = ours(ids, att, tt)
    assert (a - b).abs().max().item() < 1e-5
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, torch.full_like(ids, -100))
    mlm_loss(a, labels).backward(); mlm_loss(b, labels).backward()
    ga = dict(hf.named_parameters()); 
    for k, p in ours.named_parameters():
        assert torch.allclose(p.grad, ga[k].grad, atol=1e-5, rtol=1e-4), k


def test_round_trip_exact(tmp_path):
    m = BertForMaskedLM(BertConfig.preset("tiny", vocab_size=97).replace(num_hidden_layers=2))
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn_like(p))
    save_hf(m, tmp_path)
    back = from_hf(tmp_path)
    for k, v in m.state_dict().items(): assert torch.equal(back.state_dict()[k], v), k
    hf = HFBert.from_pretrained(tmp_path).eval()
    back2 = from_hf(hf)
    for k, v in m.state_dict().items(): assert torch.equal(back2.state_dict()[k], v), k
    assert back2.cls.predictions.decoder.weight is back2.bert.embeddings.word_embeddings.weight


def test_pretraining_checkpoint_with_pooler_and_tf_names(tmp_path):
    torch.manual_seed(3)
    c = HFConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    pt = BertForPreTraining(c).eval()           # has bert.pooler.* and cls.seq_relationship.*
    sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
          for k, v in pt.state_dict().items()}
    c.save_pretrained(tmp_path); torch.save(sd, tmp_path / "pytorch_model.bin")
    ours = from_hf(tmp_path).eval()
    ids = torch.randint(0, 50, (2, 9))
    assert (pt(input_ids=ids).prediction_logits - ours(ids)).abs().max() < 1e-5


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FewkitError, match="no config.json"): from_hf(tmp_path)
    m = BertForMaskedLM(BertConfig.preset("tiny", vocab_size=30).replace(num_hidden_layers=1))
    save_hf(m, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FewkitError, match="no model.safetensors"): from_hf(tmp_path)


def test_to_hf_same_logits():
    m = BertForMaskedLM(BertConfig.preset("tiny", vocab_size=64).replace(num_hidden_layers=2)).eval()
    ids, att, tt = _inputs(5, V=64)
    assert (to_hf(m)(input_ids=ids, attention_mask=att, token_type_ids=tt).logits - m(ids, att, tt)).abs().max() < 1e-5
