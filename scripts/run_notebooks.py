"""Run notebooks in place so that each is committed with the outputs of its run (nbdev-clean keeps outputs).

Cells flagged `#| slow`, `#| gpu`, `#| multigpu` or `#| eval: false` are not run and keep the outputs they had
(their benches run as `fewkit bench ...`). usage: python scripts/run_notebooks.py nbs/10_checkpointing.ipynb ...
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

SKIP = ("#| slow", "#| gpu", "#| multigpu", "#| eval: false")


def skipped(cell) -> bool:
    return cell.cell_type == "code" and any(line.strip() in SKIP for line in cell.source.splitlines()[:3])


def run(path: Path, timeout: int = 1200) -> float:
    "Execute every runnable code cell of `path` from its own folder; write it back with the new outputs."
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and not skipped(cell):
                client.execute_cell(cell, i)
    nbformat.write(nb, path)
    return time.perf_counter() - t0


if __name__ == "__main__":
    for p in map(Path, sys.argv[1:]):
        print(f"{p}: {run(p):.0f} s", flush=True)
