"Chapter 3 (knowledge): KG loading, subgraph sampling, mention trie, alignment, GCN parity, gated fusion."

import json, random
from pathlib import Path
import pytest, torch
from fewkit.core import FewkitDataError, data_samples, seed_everything
from fewkit.knowledge.kg import load_triples, build_graph, sample_subgraph
from fewkit.knowledge.distant_supervision import Trie, build_matcher, align, load_kdconv, prf
from fewkit.doors.knowledge import cli_main

KG = data_samples() / "kg" / "toy_triples.tsv"


@pytest.fixture(scope="module")
def toy():
    return load_triples(KG)


def test_tsv_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("subject\tpredicate\tobject\n故宫\t门票\t60元\n\n故宫\t门票\n", encoding="utf-8")
    with pytest.raises(FewkitDataError) as e:
        load_triples(p)
    assert e.value.line == 4 and str(p) in str(e.value)
    p.write_text("s\tp\to\n", encoding="utf-8")  # wrong header
    with pytest.raises(FewkitDataError) as e:
        load_triples(p)
    assert e.value.line == 1


def test_json_loader_matches_tsv_and_rejects_bad(tmp_path, toy):
    d = {}
    for s, r, o in toy:
        d.setdefault(s, []).append([s, r, o])
    p = tmp_path / "kb.json"
    p.write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    assert load_triples(p) == toy
    d["故宫"].append(["故宫", "门票"])
    p.write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(FewkitDataError):
        load_triples(p)


def test_graph_edges_and_literals(toy):
    G = build_graph(toy)
    assert G.number_of_edges() == sum(r == "周边景点" for _, r, _ in toy)
    assert G.nodes["北海公园"]["attrs"]["电话"] == ["010-64031102"]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_subgraph_budget_and_determinism(toy, seed):
    G = build_graph(toy)
    for mn, me in [(3, 2), (5, 6), (8, 10)]:
        S = sample_subgraph(
            G, ["故宫", "什刹海"], k=2, max_nodes=mn, max_edges=me, sentence="故宫和北海公园", seed=seed
        )
        assert len(S) <= mn and S.number_of_edges() <= me
        assert {"故宫", "什刹海"} <= set(S.nodes)
        # a fresh graph built in a shuffled order gives the same sample
        sh = list(toy)
        random.Random(seed).shuffle(sh)
        S2 = sample_subgraph(
            build_graph(sh), ["故宫", "什刹海"], k=2, max_nodes=mn, max_edges=me, sentence="故宫和北海公园", seed=seed
        )
        assert sorted(S.nodes) == sorted(S2.nodes) and sorted(S.edges(keys=True)) == sorted(S2.edges(keys=True))
        assert all(S.has_edge(u, v, r) for u, v, r in S2.edges(keys=True))


def test_trie_longest_match_against_brute_force():
    rng = random.Random(0)
    alphabet = "ABCD"
    for _ in range(50):
        keys = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(6)}
        text = "".join(rng.choice(alphabet + "x") for _ in range(30))
        t = Trie()
        for k in keys:
            t.add(k, k)
        want, i = [], 0  # brute force leftmost-longest
        while i < len(text):
            L = max((len(k) for k in keys if text.startswith(k, i)), default=0)
            if L:
                want.append(text[i : i + L])
                i += L
            else:
                i += 1
        assert [m[2] for m in t.find(text)] == want


def test_alias_and_alignment_on_toy_gold(toy):
    M = build_matcher(toy)
    assert [m[2] for m in M.find("残长城和八达岭长城")] == ["残长城", "八达岭长城"]
    docs, gold = load_kdconv(data_samples() / "kg" / "toy_dev.json")
    pairs, negs = align(docs, toy, context=None)
    r = prf([p.key() for p in pairs], gold)
    assert r["recall"] == 1.0 and len(negs) == len(pairs)  # every toy gold link is found
    strict, _ = align(docs, toy, context=0)
    assert prf([p.key() for p in strict], gold)["recall"] < r["recall"]


def test_cli_align_writes_jsonl(tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert (
        cli_main(["align", "--kg", str(KG), "--text", str(data_samples() / "kg" / "toy_dev.json"), "--out", str(out)])
        == 0
    )
    rows = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert rows and {"sentence", "s", "p", "o"} <= set(rows[0])


# ---- GCN and the gate -------------------------------------------------------------------------------
def test_gcn_parity_with_pyg_gcnconv():
    GCNConv = pytest.importorskip("torch_geometric.nn").GCNConv
    from fewkit.knowledge.gated_gcn import GCNLayer

    torch.manual_seed(0)
    for trial in range(5):
        N, E, di, do = torch.randint(2, 30, ()).item(), torch.randint(1, 80, ()).item(), 7, 5
        x, ei = torch.randn(N, di, requires_grad=True), torch.randint(0, N, (2, E))  # dup edges + self-loops
        conv, ours = GCNConv(di, do), GCNLayer(di, do)
        with torch.no_grad():
            conv.bias.normal_()
            ours.lin.weight.copy_(conv.lin.weight)
            ours.bias.copy_(conv.bias)
        a, b = ours(x, ei), conv(x, ei)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        (ga,) = torch.autograd.grad(a.sin().sum(), x)
        (gb,) = torch.autograd.grad(b.sin().sum(), x)
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)


def _gated(toy):
    from fewkit.testing import tiny_bert
    from fewkit.tokenizer import build_vocab, make_tokenizer
    from fewkit.knowledge.gated_gcn import GatedKnowledgeBert, knowledge_inputs

    tok = make_tokenizer(build_vocab([t for tr in toy for t in tr] + ["附近有什么好玩的你知道吗"]))
    text, kg = knowledge_inputs(
        ["故宫附近有什么好玩的", "你知道什刹海吗"], build_graph(toy), build_matcher(toy), tok, max_len=24
    )
    return GatedKnowledgeBert(tiny_bert(seed=0, vocab=len(tok))), text, kg


def test_gate_zero_equals_plain_encoder(toy):
    m, text, kg = _gated(toy)
    m.eval()
    with torch.no_grad():
        m.gate.bias.fill_(-float("inf"))  # sigma(-inf) = 0 exactly
        torch.nn.init.normal_(m.proj.weight)  # the knowledge path is not trivially zero
        with_kg = m(text["input_ids"], text["attention_mask"], kg)
        plain = m.mlm(text["input_ids"], text["attention_mask"])
        assert torch.equal(with_kg, plain)
        m.gate.bias.fill_(0.0)
        assert not torch.equal(m(text["input_ids"], text["attention_mask"], kg), plain)


def test_gradients_reach_gcn_when_gate_open(toy):
    m, text, kg = _gated(toy)
    m(text["input_ids"], text["attention_mask"], kg).logsumexp(-1).mean().backward()
    for n, p in m.kenc.gcn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert m.gate.weight.grad.abs().sum() > 0


def test_one_fused_layer_is_the_single_gate_model_bit_for_bit(toy):
    "fuse_at=l (int) or (l,): the seeded weights of the one-gate model (GCN, then gate, then projection) and its formula."
    import torch.nn as nn
    from fewkit.testing import tiny_bert
    from fewkit.knowledge.gated_gcn import GatedKnowledgeBert, KnowledgeEncoder

    m0, text, kg = _gated(toy)
    V = m0.mlm.config.vocab_size
    for at in (0, 1):
        ma, mb_, mlm = (tiny_bert(seed=0, vocab=V) for _ in range(3))  # tiny_bert seeds the global RNG itself
        torch.manual_seed(5)
        a = GatedKnowledgeBert(ma, at).eval()
        torch.manual_seed(5)
        b = GatedKnowledgeBert(mb_, (at,)).eval()
        torch.manual_seed(5)  # the single-gate model drew these, in this order
        kenc = KnowledgeEncoder(mlm.bert.embeddings.word_embeddings, 32)
        gate, proj = nn.Linear(64, 32), nn.Linear(32, 32)
        assert a.fuse_at == b.fuse_at == (at,) and list(a.state_dict()) == list(b.state_dict())
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)
        assert torch.equal(a.gate.weight, gate.weight) and torch.equal(a.proj.bias, proj.bias)
        assert torch.equal(a.kenc.gcn[0].lin.weight, kenc.gcn[0].lin.weight)
        ids, am = text["input_ids"], text["attention_mask"]
        with torch.no_grad():
            h, mb = mlm.bert.embeddings(ids), mlm.bert.extended_mask(am, torch.float32)
            node_h = kenc(kg["node_ids"], kg["node_mask"], kg["edge_index"])
            for i, layer in enumerate(mlm.bert.encoder.layer):
                h = layer(h, mb)
                if i == at:  # the single-gate formula, written out
                    has = (kg["token_node"] >= 0).unsqueeze(-1)
                    hk = node_h[kg["token_node"].clamp(min=0)] * has
                    h = h + torch.sigmoid(gate(torch.cat([h, hk], -1))) * has * proj(hk)
            ref = mlm.cls(h)
            assert torch.equal(a(ids, am, kg), ref) and torch.equal(b(ids, am, kg), ref)
            assert list(a.last_gates) == [at]
        # a state dict saved by the one-gate model (gate.*, proj.*) loads into the first fused layer's gate
        old = {k.replace("gates.0.", "gate.").replace("projs.0.", "proj."): v for k, v in a.state_dict().items()}
        assert "gate.weight" in old and "proj.bias" in old
        c = GatedKnowledgeBert(tiny_bert(seed=1, vocab=V), at)
        c.load_state_dict(old)
        assert all(torch.equal(x, y) for x, y in zip(c.state_dict().values(), a.state_dict().values()))


def test_several_fused_layers_one_gate_each(toy):
    from fewkit.core import FewkitError
    from fewkit.testing import tiny_bert
    from fewkit.knowledge.gated_gcn import GatedKnowledgeBert
    from fewkit.knowledge.gcn_pretrain import fuse_layers

    m0, text, kg = _gated(toy)
    V = m0.mlm.config.vocab_size
    ids, am = text["input_ids"], text["attention_mask"]
    m = GatedKnowledgeBert(tiny_bert(seed=0, vocab=V, layers=3), (2, 0)).eval()
    assert m.fuse_at == (0, 2) and len(m.gates) == len(m.projs) == 2
    assert m.gates[0].weight.data_ptr() != m.gates[1].weight.data_ptr()
    with torch.no_grad():
        plain = m.mlm(ids, am)
        for g, p in zip(m.gates, m.projs):
            g.bias.fill_(-float("inf"))
            torch.nn.init.normal_(p.weight)
        assert torch.equal(m(ids, am, kg), plain)  # every gate shut: exactly the plain BERT
        assert sorted(m.last_gates) == [0, 2] and all(float(g.max()) == 0 for g in m.last_gates.values())
        outs = []
        for j in (0, 1):  # opening either gate alone changes the logits, differently
            m.gates[j].bias.fill_(0.0)
            outs.append(m(ids, am, kg))
            assert not torch.equal(outs[-1], plain)
            m.gates[j].bias.fill_(-float("inf"))
        assert not torch.equal(outs[0], outs[1])
        for g in m.gates:
            g.bias.fill_(0.0)
    m(ids, am, kg).logsumexp(-1).mean().backward()
    assert all(g.weight.grad.abs().sum() > 0 for g in m.gates)
    with pytest.raises(ValueError, match="0..2"):
        GatedKnowledgeBert(tiny_bert(seed=0, vocab=V, layers=3), (1, 3))
    assert fuse_layers((-1,), 4) is None and fuse_layers(-1, 4) is None and fuse_layers((3, 1), 4) == (3, 1)
    for bad in ((-2,), (0, -1), (), (4,)):
        with pytest.raises(FewkitError, match="fuse_at"):
            fuse_layers(bad, 4)


def test_denoiser_scores_are_probabilities_and_deterministic(toy):
    from fewkit.knowledge.distant_supervision import dsgan_scores, featurize

    docs, _ = load_kdconv(data_samples() / "kg" / "toy_dev.json")
    pairs, negs = align(docs, toy)
    a = dsgan_scores(featurize([p.feats for p in pairs]), featurize(negs), epochs=3, d_steps=5, seed=1)
    b = dsgan_scores(featurize([p.feats for p in pairs]), featurize(negs), epochs=3, d_steps=5, seed=1)
    for k in ("G", "D0"):
        assert a[k].shape == (len(pairs),) and ((a[k] >= 0) & (a[k] <= 1)).all()
        assert torch.equal(a[k], b[k])


def test_bench_quick(tmp_path):
    from fewkit.core import find_shared
    from fewkit.doors.knowledge import bench

    if find_shared("kg") is None:
        pytest.skip("shared/kg (KdConv) not present")
    r = bench(tmp_path, quick=True)
    rows = r["alignment"]["rows"]
    assert rows["document_context"]["recall"] > rows["same_sentence"]["recall"]
    for v in rows.values():
        assert 0 <= v["precision"] <= 1 and v["tp"] <= v["pairs"]
    assert set(r["probe"]["arms"]) == {"backbone", "mlm_only", "knowledge", "knowledge_gcn"}
    assert all(0 <= a["held_out"]["acc"] <= 1 for a in r["probe"]["arms"].values())
    assert set(r["summary"]) == set(r["probe"]["arms"])
    assert [d["direction"] for d in r["alignment_tuned"]["directions"]] == ["A->B", "B->A"]
    assert (tmp_path / "knowledge.png").exists()
    fs = r["few_shot"]  # fewkit fewclue on the saved backbones (smoke size: split 0, 2 steps)
    assert set(fs["arms"]) == {"mlm_only", "knowledge_gcn"}
    assert 0 <= fs["arms"]["knowledge_gcn"]["eprstmt"]["dev_mean"] <= 1
    assert "knowledge_gcn - mlm_only, eprstmt" in fs["differences"]
    steps = {a: v["steps"] for a, v in r["probe"]["arms"].items()}
    assert steps["knowledge_gcn"] == 3 and steps["mlm_only"] > 3 * steps["knowledge_gcn"]  # equal FLOPs


def test_fewkit_pretrain_knowledge_writes_hf_folder_and_logs(tmp_path):
    from transformers import BertForMaskedLM as HF
    from fewkit.cli import main

    kg = data_samples() / "kg"
    argv = ["pretrain", "--knowledge", "--triples", str(kg / "toy_triples.tsv"), "--dialogues", str(kg / "toy_dev.json")]
    argv += ["--steps", "3", "--batch-size", "4", "--people-daily", "0", "--denoise", "none", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = [json.loads(l) for l in open(tmp_path / "losses.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:  # every loss part and the gate of the fused layer, per step
        assert {"mlm", "mention", "joint_mask", "margin", "gain", "kg_gain"} <= set(r)
        assert any(k.startswith("gate_L") and 0 < r[k] < 1 for k in r)
    run = json.loads((tmp_path / "knowledge_run.json").read_text())
    assert run["arm"] == "gcn" and run["corpus"]["pairs"] > 0
    HF.from_pretrained(tmp_path)  # what fewkit fewclue --model loads


def test_fewkit_pretrain_knowledge_fuse_at_a_comma_list_logs_a_gate_per_layer(tmp_path, capsys):
    from fewkit.cli import main

    kg = data_samples() / "kg"
    argv = ["pretrain", "--knowledge", "--triples", str(kg / "toy_triples.tsv")]
    argv += ["--dialogues", str(kg / "toy_dev.json"), "--steps", "2", "--batch-size", "4", "--people-daily", "0", "--denoise", "none", "--out", str(tmp_path)]
    assert main(argv + ["--fuse-at", "3,1"]) == 0  # the shipped backbone has 4 layers
    rows = [json.loads(l) for l in open(tmp_path / "losses.jsonl")]
    assert all({"gate_L1", "gate_L3"} <= set(r) and not {"gate_L0", "gate_L2"} & set(r) for r in rows)
    assert json.loads((tmp_path / "knowledge_run.json").read_text())["settings"]["fuse_at"] == [3, 1]
    assert main(argv + ["--fuse-at", "1,4"]) == 2 and "0..3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(argv + ["--fuse-at", "1;3"])


# ---- knowledge pretraining through fewkit.train.fit ---------------------------------------------------
def _knowledge_setup(toy, **kw):
    from fewkit.tokenizer import build_vocab, make_tokenizer
    from fewkit.train import TrainSettings
    from fewkit.knowledge.tasks import KnowledgeSettings, knowledge_data, knowledge_tensors, linearize

    docs, _ = load_kdconv(data_samples() / "kg" / "toy_dev.json")
    tok = make_tokenizer(build_vocab([x for d in docs for x in d] + [linearize(t) for t in toy] + ["的是"]))
    data = knowledge_data(toy, docs, holdout=0.0)
    s = KnowledgeSettings(train=TrainSettings(steps=3, batch_size=4, lr=1e-3, out=""), max_len=32, **kw)
    return tok, knowledge_tensors(data, tok, s.max_len), s


class _NoCalls:
    "Stands in for the tokenizer during training: the ids it needs, and an error if anything tokenises."

    def __init__(self, tok):
        self.mask_token_id = tok.mask_token_id
        self.pad_token_id = tok.pad_token_id
        self.all_special_ids = tok.all_special_ids
        self.n = len(tok)

    def __len__(self):
        return self.n

    def __call__(self, *a, **k):
        raise AssertionError("tokenised inside the trainer")


def test_knowledge_training_never_tokenises_and_logs_parts(toy):
    from fewkit.testing import tiny_bert
    from fewkit.knowledge.tasks import pretrain_knowledge

    tok, tensors, s = _knowledge_setup(toy)
    res = pretrain_knowledge(tiny_bert(seed=0, vocab=len(tok)), _NoCalls(tok), tensors, s)
    assert len(res.history) == 3
    assert all(set(r["parts"]) == {"mention", "joint_mask", "margin"} for r in res.history)
    base = pretrain_knowledge(tiny_bert(seed=0, vocab=len(tok)), _NoCalls(tok), tensors, s.mlm_only())
    assert all("parts" not in r for r in base.history)


def test_fit_step_equals_the_losses_computed_by_hand(toy):
    "Step 1 of fit logs exactly the MLM mean and the weighted task losses of the first batch, computed directly."
    import copy
    from fewkit.testing import tiny_bert
    from fewkit.masking import BatchStream, mlm_count, mlm_loss_sum
    from fewkit.knowledge.tasks import KnowledgeCollate, KnowledgeModel, knowledge_losses, pretrain_knowledge

    tok, tensors, s = _knowledge_setup(toy, mention_weight=2.0, joint_weight=0.5, margin_weight=3.0)
    model = tiny_bert(seed=1, vocab=len(tok))  # no dropout: the forward is deterministic
    before = copy.deepcopy(model)
    res = pretrain_knowledge(model, tok, tensors, s)
    b = next(BatchStream(tensors["mlm"], s.train.batch_size, KnowledgeCollate(tensors, tok, s), seed=s.train.seed))
    seed_everything(s.train.seed)
    km = KnowledgeModel(before)  # the same head weights as the run's
    with torch.no_grad():
        mlm = mlm_loss_sum(km, b) / mlm_count(b)
        parts = knowledge_losses(km, b, s)
    rec = res.history[0]
    assert rec["loss"] == pytest.approx(mlm.item(), rel=1e-5)
    assert set(rec["parts"]) == set(parts)
    for k, v in parts.items():
        assert rec["parts"][k] == pytest.approx(v.item(), rel=1e-5), k
    assert not torch.equal(model.bert.embeddings.word_embeddings.weight, before.bert.embeddings.word_embeddings.weight)


def test_joint_mask_hides_the_entity_on_both_sides(toy):
    from fewkit.tokenizer import build_vocab, make_tokenizer
    from fewkit.knowledge.tasks import joint_mask, joint_tensors

    tok = make_tokenizer(build_vocab(["附近有景山公园", "故宫周边景点"]))
    jt = joint_tensors([("附近有景山公园", ("故宫", "周边景点", "景山公园"))] * 3, tok, 32)
    for seed in range(3):
        jm = joint_mask(jt, tok, 0.15, torch.Generator().manual_seed(seed))
        ent = jt["slot_o"]
        assert int(ent[0].sum()) == 8  # 景山公园 in the sentence and in the triple
        assert (jm["input_ids"][ent] == tok.mask_token_id).all()
        assert torch.equal(jm["labels"][ent], jt["input_ids"][ent])


def test_spo_margin_equals_margin_ranking_loss():
    import torch.nn.functional as F
    from fewkit.knowledge.tasks import spo_margin_loss

    g = torch.Generator().manual_seed(0)
    for B, m in [(2, 0.1), (6, 0.3), (9, 0.5)]:
        u = F.normalize(torch.randn(B, 8, generator=g), dim=-1)
        v = F.normalize(torch.randn(B, 8, generator=g), dim=-1)
        sim = u @ v.T
        i, j = torch.where(~torch.eye(B, dtype=torch.bool))
        lib = torch.nn.MarginRankingLoss(margin=m)(sim.diagonal()[i], sim[i, j], torch.ones(len(i)))
        torch.testing.assert_close(spo_margin_loss(u, v, torch.arange(B), m), lib)


# ---- the probe (fewkit.knowledge.probe) ---------------------------------------------------------------
def test_probe_items_distractors_are_other_values(toy):
    from fewkit.knowledge.probe import probe_items

    items = probe_items(toy, {s for s, _, _ in toy}, n_cands=3, seed=0)
    assert items and items == probe_items(toy, {s for s, _, _ in toy}, n_cands=3, seed=0)  # seeded
    for s, r, o, cands in items:
        assert len(cands) == 3 and cands.count(o) == 1
        assert (s, r, o) in set(toy)


def test_probe_and_mlm_accuracy_equal_with_transformers(toy, tmp_path):
    "Same weights in transformers' BertForMaskedLM: the same probe answers and the same masked-character accuracy."
    from transformers import BertForMaskedLM as HF
    from fewkit.model_io import save_hf
    from fewkit.testing import tiny_bert
    from fewkit.knowledge.probe import mlm_accuracy, probe, probe_items

    tok, _, _ = _knowledge_setup(toy)
    model = tiny_bert(seed=3, vocab=len(tok))
    save_hf(model, tmp_path, tok)
    hf = HF.from_pretrained(tmp_path).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, input_ids, attention_mask=None):
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits

    items = probe_items(toy, {s for s, _, _ in toy}, n_cands=3)
    assert probe(model, tok, items) == probe(Logits(), tok, items)
    texts = ["故宫附近有景山公园", "北海公园的门票是10元"]
    a, b = mlm_accuracy(model, tok, texts), mlm_accuracy(Logits(), tok, texts)
    assert (a["n"], a["acc"]) == (b["n"], b["acc"]) and a["loss"] == pytest.approx(b["loss"], abs=1e-3)


# ---- the gated GCN inside knowledge pretraining (fewkit.knowledge.gcn_pretrain) -----------------------
def _gcn_setup(toy):
    from fewkit.knowledge.tasks import knowledge_data
    from fewkit.knowledge.gcn_pretrain import data_graph

    tok, tensors, s = _knowledge_setup(toy)
    docs, _ = load_kdconv(data_samples() / "kg" / "toy_dev.json")
    data = knowledge_data(toy, docs, holdout=0.0)
    return tok, tensors, data_graph(data, tok, s), s, data


def test_batch_graph_equals_the_per_sentence_reference(toy):
    "Indexing the flat per-sentence subgraphs gives chapter 3.2's per-sentence loop (knowledge_inputs) exactly."
    from fewkit.knowledge.gated_gcn import knowledge_inputs
    from fewkit.knowledge.gcn_pretrain import batch_graph

    from fewkit.knowledge.gcn_pretrain import data_graph

    tok, tensors, _, s, data = _gcn_setup(toy)
    graph = data_graph(data, tok, s, sampled=False)  # the subgraphs found once, before the trainer
    G, M = build_graph(data["triples"]), build_matcher(data["triples"])
    for rows in ([0, 1, 2, 3], [7, 3, 3, 11], [5]):
        rows = torch.tensor(rows)
        kg = batch_graph(graph, rows, s.max_len)
        sents = [data["sentences"][i] for i in rows]
        _, ref = knowledge_inputs(sents, G, M, tok, s.max_len, s.max_nodes, s.max_edges, s.train.seed)
        n = len(ref["node_ids"]) if ref["edge_index"].numel() or (ref["token_node"] >= 0).any() else 0
        assert torch.equal(kg["node_ids"][:n], ref["node_ids"][:n])
        assert torch.equal(kg["edge_index"], ref["edge_index"])
        assert torch.equal(kg["token_node"], ref["token_node"])
        assert len(kg["node_ids"]) == n + 1  # one padding node closes every batch


def test_gate_shut_gives_exactly_the_plain_mlm_logits(toy):
    from fewkit.testing import tiny_bert
    from fewkit.knowledge.tasks import KnowledgeModel
    from fewkit.knowledge.gcn_pretrain import GraphCollate, GatedKnowledgeModel, graph_of

    tok, tensors, graph, s, _ = _gcn_setup(toy)
    for seed in range(2):  # fresh random weights
        gm = GatedKnowledgeModel(tiny_bert(seed=seed, vocab=len(tok))).eval()
        plain = KnowledgeModel(tiny_bert(seed=seed, vocab=len(tok))).eval()  # the same BERT weights, no GCN
        b = GraphCollate(tensors, graph, tok, s)(list(torch.arange(4)), torch.Generator().manual_seed(seed))
        assert (b["kg_token_node"] >= 0).any()  # mentions are linked: the graph would change the states
        with torch.no_grad():
            gm.gated.gate.bias.fill_(-float("inf"))  # sigma(-inf) = 0 exactly
            torch.nn.init.normal_(gm.gated.proj.weight)
            ref = plain(b["input_ids"], b["attention_mask"])
            assert torch.equal(gm(b["input_ids"], b["attention_mask"], kg=graph_of(b)), ref)
            loss = gm(b["input_ids"], b["attention_mask"], labels=b["labels"], kg=graph_of(b))
            assert torch.equal(loss, plain(b["input_ids"], b["attention_mask"], labels=b["labels"]))
            gm.gated.gate.bias.fill_(0.0)
            assert not torch.equal(gm(b["input_ids"], b["attention_mask"], kg=graph_of(b)), ref)


def test_gcn_pretraining_runs_through_fit_and_logs_parts_and_gates(toy):
    from fewkit.core import FewkitError
    from fewkit.testing import tiny_bert
    from fewkit.train import ParallelSettings
    from fewkit.knowledge.gcn_pretrain import pretrain_gcn

    tok, tensors, graph, s, _ = _gcn_setup(toy)
    res, gates = pretrain_gcn(tiny_bert(seed=0, vocab=len(tok)), _NoCalls(tok), tensors, graph, s)
    assert len(res.history) == s.train.steps == len(gates)
    assert all(set(r["parts"]) == {"mention", "joint_mask", "margin", "gain"} for r in res.history)
    (layer,) = res.model.gated.fuse_at  # the default: one layer, the middle one
    assert all(0 < g[f"gate_L{layer}"] < 1 and "gain" in g for g in gates)
    for layer in res.model.gated.kenc.gcn:  # the GCN trained: its biases start at 0
        assert layer.bias.abs().sum() > 0
    off, _ = pretrain_gcn(tiny_bert(seed=0, vocab=len(tok)), tok, tensors, graph, s.replace(gain_weight=0.0))
    assert all("gain" not in r["parts"] for r in off.history)
    ddp = s.replace(train=s.train.replace(parallel=ParallelSettings(engine="ddp")))
    with pytest.raises(FewkitError, match="one process"):
        pretrain_gcn(tiny_bert(seed=0, vocab=len(tok)), tok, tensors, graph, ddp)


def test_knowledge_gain_pairs_dropout_masks(toy):
    "With dropout on and the gate shut, L_plain == L_kg exactly: the gain's plain forward replays the same masks."
    import torch
    from fewkit.core import seed_everything
    from fewkit.model import BertConfig, BertForMaskedLM
    from fewkit.knowledge.gcn_pretrain import GatedKnowledgeModel, GraphCollate, gcn_losses, gcn_mlm_loss_sum

    tok, tensors, graph, s, _ = _gcn_setup(toy)
    seed_everything(0)
    m = GatedKnowledgeModel(BertForMaskedLM(BertConfig.preset("tiny", vocab_size=len(tok)))).train()
    assert m.mlm.config.hidden_dropout_prob > 0
    mb = GraphCollate(tensors, graph, tok, s)(list(torch.arange(4)), torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.gated.gate.bias.fill_(-float("inf"))
    before = torch.get_rng_state()
    gcn_mlm_loss_sum(m, mb)
    gcn_losses(m, mb, s)
    assert m.last["gain"] == 0.0
    assert not torch.equal(torch.get_rng_state(), before)  # the stream moved on (by the knowledge forward's draws)


def test_sampled_batch_graph_equals_the_sentence_by_sentence_reference(toy):
    "The batched sampler (no loop over sentences) = the same rule written with lists and dicts, on random batches/budgets."
    from fewkit.knowledge.gcn_pretrain import sample_batch, sample_batch_reference, sample_keys

    tok, tensors, ix, s, data = _gcn_setup(toy)
    S, g = len(data["sentences"]), torch.Generator().manual_seed(0)
    sizes = []
    for trial in range(60):
        B = int(torch.randint(1, 9, (1,), generator=g))
        rows = torch.randint(0, S, (B,), generator=g)
        n, e, h = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 10), (0, 12), (0, 4)))
        ss = s.replace(max_nodes=n, max_edges=e, hops=h)
        keys = sample_keys(ix, B, g)
        a, b = sample_batch(ix, rows, keys, ss, s.max_len), sample_batch_reference(ix, rows, keys, ss, s.max_len)
        assert sorted(a) == sorted(b)
        for k in a:
            assert torch.equal(a[k], b[k]), (trial, k)
        per = torch.bincount(a["batch"], minlength=B)
        assert (per <= n).all() and a["edge_index"].shape[1] <= 2 * e * B
        assert len(a["node_ids"]) == len(a["batch"]) + 1  # one padding node closes every batch
        sizes.append(int(per.max()))
    assert max(sizes) > 2 and any(x > 0 for x in sizes)  # the trials reached beyond the seeds


def test_subgraphs_are_sampled_per_batch_seeded_and_resumable(toy, tmp_path):
    from fewkit.masking import BatchStream
    from fewkit.testing import tiny_bert
    from fewkit.knowledge.gcn_pretrain import GraphCollate, pretrain_gcn

    tok, tensors, ix, s, data = _gcn_setup(toy)
    tight = s.replace(max_nodes=3)  # room for a choice among the neighbours
    coll = GraphCollate(tensors, ix, tok, tight)
    rows = list(torch.arange(len(data["sentences"])))
    before = torch.get_rng_state()
    draws = [coll(rows, torch.Generator().manual_seed(k))["kg_node_ids"] for k in range(6)]
    assert torch.equal(torch.get_rng_state(), before)  # only the batch's generator is drawn from
    assert torch.equal(draws[0], coll(rows, torch.Generator().manual_seed(0))["kg_node_ids"])  # seeded
    assert any(not torch.equal(draws[0], d) for d in draws[1:])  # sampled at train time, not fixed
    # the stream position decides the subgraphs: a stream restored after 2 batches gives batch 3 exactly
    stream = BatchStream(torch.arange(len(rows)), 4, coll, seed=1)
    first = [next(stream) for _ in range(3)]
    again = BatchStream(torch.arange(len(rows)), 4, coll, seed=1)
    again.load_state_dict(dict(epoch=0, pos=8, seed=1))
    third = next(again)
    assert all(torch.equal(third[k], first[2][k]) for k in first[2])
    # and through fit: resumed from the step-2 checkpoint, steps 3-4 have exactly the uninterrupted run's losses
    def run(out, resume=False):
        t = tight.train.replace(steps=4, save_every=2, out=str(out), progress=False)
        res, gates = pretrain_gcn(tiny_bert(seed=0, vocab=len(tok)), tok, tensors, ix, tight.replace(train=t), resume=resume)
        return res.history, gates

    full, gates = run(tmp_path / "full")
    ck = sorted((tmp_path / "full").rglob("step_00000002"))[0]
    resumed, gates_r = run(tmp_path / "resumed", resume=ck)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]  # steps 1-2 restored from the checkpoint, 3-4 trained again
    assert [(r["loss"], r["parts"]) for r in resumed] == [(r["loss"], r["parts"]) for r in full]
    assert [g["step"] for g in gates_r] == [3, 4] and gates_r == gates[2:]


def test_one_gcn_call_per_step_over_the_whole_batch_graph(toy):
    "The GCN encodes the batch's disjoint union once per step (no call per sentence); its input holds every sentence's nodes."
    from fewkit.testing import tiny_bert
    from fewkit.knowledge.gated_gcn import KnowledgeEncoder
    from fewkit.knowledge.gcn_pretrain import pretrain_gcn

    tok, tensors, ix, s, _ = _gcn_setup(toy)
    calls = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, args, out: calls.append(len(args[0])) if isinstance(m, KnowledgeEncoder) else None
    )
    try:
        res, _ = pretrain_gcn(tiny_bert(seed=0, vocab=len(tok)), tok, tensors, ix, s)
    finally:
        hook.remove()
    assert len(calls) == s.train.steps  # one call per step (the gain's plain forward runs without the graph)
    assert max(calls) > s.max_nodes  # more nodes than one sentence may have: several sentences' subgraphs at once


def test_sampling_keys_pick_neighbours_in_proportion_to_relevance():
    "Gumbel top-1 over hashed keys: the first pick among three candidates of relevance 1:2:4 falls 1/7, 2/7, 4/7 of the time."
    from fewkit.knowledge.gcn_pretrain import SampleKeys, sample_keys

    n = 3000
    keys = sample_keys(dict(log_prior=torch.log(torch.tensor([1.0, 2.0, 4.0]))), n, torch.Generator().manual_seed(0))
    k = keys(torch.arange(n).repeat_interleave(3), torch.arange(3).repeat(n)).view(n, 3)
    freq = torch.bincount(k.argmax(1), minlength=3) / n
    assert torch.allclose(freq, torch.tensor([1 / 7, 2 / 7, 4 / 7]), atol=0.03), freq
    assert torch.equal(keys[5:6](torch.tensor([0]), torch.tensor([2])), k[5, 2:3])  # a sentence's keys, alone or batched
    again = sample_keys(dict(log_prior=keys.log_prior), n, torch.Generator().manual_seed(0))
    assert isinstance(again, SampleKeys) and torch.equal(again.salt, keys.salt)  # seeded
