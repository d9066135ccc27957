"""GPU checks of issue 15 item 6, one prepared script: the tiny preset in bf16 with sdpa, and a stack of the seed's
layers (hidden 2048, 32 heads) as deep as fits, with tokens/s and MFU against the GPU's bf16 peak.
usage: python scripts/gpu_check.py OUT_DIR [--smoke]   (--smoke: tiny sizes on CPU, to check the script itself)"""

import json
import sys
import time
from pathlib import Path

import torch

from fewkit.measure import env_info
from fewkit.model import BertConfig, BertForMaskedLM

# dense bf16 peak FLOP/s by device name (vendor data sheets, without sparsity)
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


def peak_of(name: str) -> float | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


def train_rate(cfg: BertConfig, batch: int, seq: int, steps: int, device: str, dtype=torch.bfloat16) -> dict:
    "Tokens/s of forward+backward+AdamW on random ids (bf16 autocast), after 2 warm-up steps."
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.startswith("cuda"))
    ids = torch.randint(5, cfg.vocab_size, (batch, seq), device=device)
    labels = torch.where(torch.rand(batch, seq, device=device) < 0.15, ids, torch.full_like(ids, -100))
    times = []
    for i in range(steps + 2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype):
            loss = model(ids, labels=labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    step = sorted(times)[len(times) // 2]
    params = sum(p.numel() for p in model.parameters())
    H, L = cfg.hidden_size, cfg.num_hidden_layers
    flops_per_token = 6 * params + 12 * L * seq * H  # weights + attention scores, forward and backward
    peak_mem = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return dict(layers=L, params=params, batch=batch, seq=seq, step_s=step, tokens_per_s=batch * seq / step,
                flops_per_token=flops_per_token, peak_memory_bytes=peak_mem, loss=float(loss.detach()))


def main(out: Path, smoke: bool):
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if smoke else "cuda"
    res = dict(env=env_info(device))
    name = res["env"]["device_name"]
    peak = peak_of(name)
    tiny = BertConfig.preset("tiny", vocab_size=21128).replace(attn_impl="sdpa")
    res["tiny_bf16_sdpa"] = train_rate(tiny, 8 if smoke else 64, 128, 3 if smoke else 50, device)
    seed = BertConfig.preset("seed-1.2b").replace(attn_impl="sdpa")
    depths = [2, 1] if smoke else [24, 16, 8, 4, 2, 1]  # the deepest stack that fits wins
    res["seed_stack"] = None
    for L in depths:
        cfg = seed.replace(num_hidden_layers=L) if not smoke else seed.replace(num_hidden_layers=L, hidden_size=64,
                                                                                 num_attention_heads=2, intermediate_size=256)
        try:
            r = train_rate(cfg, 2 if smoke else 8, 64 if smoke else 512, 2 if smoke else 10, device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            continue
        r["mfu"] = r["flops_per_token"] * r["tokens_per_s"] / peak if peak else None
        res["seed_stack"] = r
        break
    res["bf16_peak_flops"] = peak
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "env"}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--smoke" in sys.argv)
