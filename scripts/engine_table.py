"""The engine parity table: one short MLM run of a tiny BERT on 1 process, then on 2 gloo processes under each engine.

usage: python scripts/engine_table.py OUT [STEPS]   (prints a markdown table; tests/test_engines.py asserts the same)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "engine_run.py"
NAMES = {"ddp": "DDP", "zero": "fewkit ZeRO", "deepspeed": "DeepSpeed ZeRO"}
OFFLOAD = {1: " + optimizer offload", 2: " + parameter offload", 3: " + optimizer and parameter offload"}
ADAMW = ["ddp:0", "zero:0", "zero:1", "zero:2", "zero:3", "zero:2:1", "deepspeed:0", "deepspeed:1", "deepspeed:2",
         "deepspeed:3", "deepspeed:2:1", "deepspeed:3:1", "deepspeed:3:3"]
LAMB = ["ddp:0", "deepspeed:0"]  # LAMB keeps whole tensors only there (see fewkit.parallel.engine.deepspeed_config)


def launch(out: Path, runs: list[str], steps: int, optim: str) -> dict:
    "Run `runs` one after another (torchrun on 2 processes unless 'none:0'); {run: result.json}."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ENGINE_OPTIM": optim}
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", "2", "--standalone"]
    cmd = ([sys.executable] if runs == ["none:0"] else torchrun) + [str(SCRIPT), ",".join(runs), str(out), str(steps)]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return {r: json.loads((out / r.replace(":", "_") / "result.json").read_text()) for r in runs}


def name(run: str) -> str:
    engine, stage, *off = run.split(":")
    if engine == "none":
        return "1 process"
    if engine == "ddp":
        return "DDP, 2"
    return f"{NAMES[engine]}-{stage}{OFFLOAD.get(int(off[0]) if off else 0, '')}, 2"


def rows(ref: dict, got: dict, optim: str) -> list[str]:
    out = []
    for run, g in {"none:0": ref, **got}.items():
        loss = g["losses"]
        rel = max(abs(a - b) / abs(b) for a, b in zip(loss, ref["losses"]))
        w = abs(g["weights_abs_sum"] - ref["weights_abs_sum"]) / ref["weights_abs_sum"]
        mid = len(loss) // 2 - 1
        out.append(f"| {optim} | {name(run)} | {loss[0]:.6f} | {loss[mid]:.6f} | {loss[-1]:.6f} | {rel:.1e} | {w:.1e} |")
    return out


if __name__ == "__main__":
    out, steps = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 20
    lines = [
        f"| optimizer | engine, processes | loss step 1 | loss step {steps // 2} | loss step {steps} "
        f"| max rel. diff. of the {steps} losses to 1 process | rel. diff. of Σ\\|w\\| after {steps} steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for optim, runs in (("AdamW", ADAMW), ("LAMB", LAMB)):
        o = optim.lower()
        ref = launch(out / o, ["none:0"], steps, o)["none:0"]
        lines += rows(ref, launch(out / o, runs, steps, o), optim)
    print("\n".join(lines))
