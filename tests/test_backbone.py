"The backbone that ships inside the package: its files are the ones recorded, and it reproduces its held-out accuracy."

import hashlib
import json

import pytest
import torch

from fewkit.core import shipped_backbone


def test_files_match_their_recorded_sha256():
    d = shipped_backbone()
    prov = json.loads((d / "PROVENANCE.json").read_text())
    present = sorted(p.name for p in d.iterdir() if p.name != "PROVENANCE.json")
    assert present == sorted(prov["sha256"])
    for name, digest in prov["sha256"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest, name


def test_reproduces_its_heldout_mlm_accuracy():
    from fewkit.model_io import from_hf
    from fewkit.pretrain.mlm import PretrainSettings, build_data, mlm_accuracy
    from fewkit.tokenizer import load_tokenizer

    d = shipped_backbone()
    prov = json.loads((d / "PROVENANCE.json").read_text())
    tok = load_tokenizer(d)
    torch.set_num_threads(1)
    _, heldout, _ = build_data(PretrainSettings(preset="tiny"), tok, seed=prov["seed"])  # the same 256 rows, masks
    model = from_hf(d)
    got = mlm_accuracy(model, heldout)
    assert got["n"] == prov["heldout_masked_positions"]
    assert got["acc"] == pytest.approx(prov["heldout_mlm_accuracy"], abs=1e-9)
    assert got["loss"] == pytest.approx(prov["heldout_mlm_loss"], rel=1e-5)
