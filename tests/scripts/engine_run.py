"One short MLM run of a tiny BERT through fewkit.train.fit under an engine given on the command line (torchrun or not)."

import json
import os
import sys
import time

import torch
import torch.distributed as dist

from fewkit.masking import BatchStream, mlm_count, mlm_loss_sum
from fewkit.parallel.distributed import _die_with_parent
from fewkit.testing import tiny_bert
from fewkit.train import TrainSettings, fit


def rows(n=64, seq=12, vocab=64, seed=0):
    "Fixed (ids, labels) rows: the same data on every rank and in every run."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, seq), generator=g)
    labels = torch.where(torch.rand(n, seq, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    labels[:, 0] = ids[:, 0]
    return list(zip(ids, labels))


def collate(items, g):
    return dict(input_ids=torch.stack([a for a, _ in items]), labels=torch.stack([b for _, b in items]))


def _pause():
    "ENGINE_PAUSE_AT=K: rank 0 stops for good after step K (its checkpoint is on disk), so a test can kill the run mid-way for sure."
    at = int(os.environ.get("ENGINE_PAUSE_AT", "0"))

    def cb(rec):
        if rec["step"] == at:
            time.sleep(3600)

    return (cb,) if at else ()


def main(engine: str, stage: int, out: str, steps: int, resume: str, offload: int):
    "One run under `engine`; on rank 0 writes out/result.json (losses and a digest of the trained weights)."
    multi = engine != "none"
    rank = dist.get_rank() if multi else 0
    world = dist.get_world_size() if multi else 1
    s = TrainSettings.from_dict(
        dict(
            steps=steps,
            batch_size=8,
            lr=3e-3,
            warmup=2,
            grad_clip=1.0,
            save_every=2,
            keep=2,
            out=out,
            device=os.environ.get("ENGINE_DEVICE", "cpu"),
            progress=False,
            optim=dict(name=os.environ.get("ENGINE_OPTIM", "adamw")),
            # offload: 1 = the optimizer (ZeRO-Offload), 2 = the parameters (stage 3), 3 = both
            parallel=dict(engine=engine, zero=dict(stage=stage, offload_optimizer=bool(offload & 1), offload_param=bool(offload & 2))),
        )
    )
    model = tiny_bert(seed=0)
    stream = BatchStream(rows(), 8, collate, seed=0, rank=rank, world=world)
    res = fit(model, stream, mlm_loss_sum, s, count_fn=mlm_count, resume=resume or False, callbacks=_pause())
    if rank == 0:
        state = res.state_dict()
        digest = float(sum(v.double().abs().sum() for v in state.values() if v.is_floating_point()))
        rec = dict(losses=[h["loss"] for h in res.history], weights_abs_sum=digest, world=world)
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(rec, f)
        if os.environ.get("EXPORT_HF"):  # the trained weights, whatever the engine, as a Hugging Face folder
            from fewkit.model_io import save_hf

            plain = tiny_bert(seed=1)
            plain.load_state_dict(state)
            save_hf(plain, os.path.join(out, "hf"))
    if multi:
        dist.barrier()


if __name__ == "__main__":
    # usage: engine_run.py ENGINE:STAGE[:offload][,ENGINE:STAGE...] OUT STEPS [RESUME]; runs them one after another
    runs, out, steps = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
    resume = sys.argv[4] if len(sys.argv) > 4 else ""
    torch.set_num_threads(1)
    multi = any(not r.startswith("none") for r in runs)
    if multi:
        # torchrun starts its workers in their own session, so killing torchrun (a test's SIGKILL, a timeout) does not
        # reach them: the kernel kills each rank when its parent dies, as fewkit's own launcher arranges
        launcher = os.getppid()
        _die_with_parent()
        if os.getppid() != launcher:  # torchrun died before prctl took effect
            os._exit(1)
        dist.init_process_group("nccl" if os.environ.get("ENGINE_DEVICE", "cpu").startswith("cuda") else "gloo")
        if os.environ.get("ENGINE_DEVICE", "cpu").startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    for r in runs:
        engine, stage, *rest = r.split(":")
        offload = int(rest[0]) if rest else 0
        main(engine, int(stage), os.path.join(out, r.replace(":", "_")), steps, resume, offload)
    if multi:
        dist.destroy_process_group()
