"Fault injection for the launcher (issue 14 item 5): a rank that raises, segfaults, exits mid-collective or hangs, and a launcher stopped by SIGTERM."

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from fewkit.core import FewkitError
from fewkit.parallel.distributed import RankError, run_function

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
LAUNCH = "import sys; from fewkit.doors.launch import cli_main; sys.exit(cli_main(sys.argv[1:]))"

# every rank runs this script; argv: MODE OUT_DIR
SCRIPT = '''
import os, sys, time, signal
import torch, torch.distributed as dist
from fewkit.parallel.distributed import init_distributed
mode, out = sys.argv[1], sys.argv[2]
r, n = init_distributed(timeout_s=60)
if mode == "raise" and r == 1:
    raise RuntimeError("rank one broke on purpose")
if mode == "segv" and r == 1:
    os.kill(os.getpid(), signal.SIGSEGV)
if mode == "exit3" and r == 1:
    print("rank 1 is leaving with code 3", file=sys.stderr, flush=True)
    time.sleep(1.0)  # rank 0 is already waiting in the all-reduce below
    os._exit(3)
if mode == "beat":
    with open(os.path.join(out, f"pid{r}"), "w") as f:
        f.write(str(os.getpid()))
    while True:  # keeps writing until someone ends it
        with open(os.path.join(out, f"beat{r}"), "a") as f:
            f.write(".")
        time.sleep(0.1)
t = torch.ones(1)
dist.all_reduce(t)
if mode == "hang" and r == 1:
    time.sleep(3600)  # the others finish; this rank never does
print(f"rank {r} done", flush=True)
'''


def launch(tmp_path, mode, *flags, timeout=120):
    "Run `fewkit launch -n 2 FLAGS train.py MODE tmp_path`; (return code, output, seconds)."
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-c", LAUNCH, "-n", "2", *flags, str(script), mode, str(tmp_path)]
    t0 = time.time()
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr, time.time() - t0


@pytest.mark.multiproc
def test_launch_rank_raises(tmp_path):
    rc, out, s = launch(tmp_path, "raise")
    assert rc != 0, out
    assert re.search(r"rank 1 failed first", out), out[-3000:]
    assert "Traceback" in out and "rank one broke on purpose" in out, out[-3000:]
    assert "rank 0 failed first" not in out


@pytest.mark.multiproc
def test_launch_rank_segfaults(tmp_path):
    rc, out, s = launch(tmp_path, "segv")
    assert rc != 0, out
    assert re.search(r"rank 1 failed first.*SIGSEGV", out), out[-3000:]


@pytest.mark.multiproc
def test_launch_rank_exits_mid_collective(tmp_path):
    # rank 0 dies of "connection closed" a moment after rank 1 exits: the cause is rank 1, code 3
    rc, out, s = launch(tmp_path, "exit3")
    assert rc != 0, out
    assert re.search(r"rank 1 failed first.*exit code 3", out), out[-3000:]
    assert "rank 0 failed first" not in out, out[-3000:]
    assert "rank 1 is leaving with code 3" in out.split("rank 1 failed first")[1], "its last stderr lines"


@pytest.mark.multiproc
def test_launch_hung_rank_fails_within_the_limit(tmp_path):
    rc, out, s = launch(tmp_path, "hang", "--max-time", "20", timeout=120)
    assert rc == 124, out
    assert "rank 0 done" in out and "rank 1 done" not in out
    m = re.search(r"timed out after 20 s.*still running: rank 1; every rank was ended ([0-9.]+) s later", out, re.S)
    assert m, out[-3000:]
    print(f"hung-rank job: {s:.1f} s from the shell (limit 20 s; every rank ended {m[1]} s after it)")
    assert float(m[1]) < 10  # the launcher's grace before SIGKILL
    assert s < 20 + 25, s  # + starting Python and torch for the launcher itself, on a loaded machine


def _gone(pid: int) -> bool:
    "True when the process no longer exists (a zombie waiting for its reaper counts as gone)."
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.multiproc
def test_sigterm_to_launcher_ends_every_rank(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-c", LAUNCH, "-n", "2", "--max-time", "60", str(script), "beat", str(tmp_path)]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.time()
        while not all((tmp_path / f"beat{r}").exists() for r in (0, 1)):
            assert time.time() - t0 < 60 and p.poll() is None, "ranks did not start"
            time.sleep(0.2)
        pids = [int((tmp_path / f"pid{r}").read_text()) for r in (0, 1)]
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=20)[0]
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    deadline = time.time() + 5  # a rank may take a moment to be reaped
    while not all(_gone(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in pids), (pids, out[-2000:])
    sizes = [(tmp_path / f"beat{r}").stat().st_size for r in (0, 1)]
    time.sleep(1.0)
    assert sizes == [(tmp_path / f"beat{r}").stat().st_size for r in (0, 1)], "a rank kept writing"


# the same faults through run_function (the notebooks' launcher: one Python forks the ranks)
FAIL_ON = "fewkit.testing:fail_on"


@pytest.mark.multiproc
@pytest.mark.parametrize("how,what", [("raise", "exploded on purpose"), ("segv", "SIGSEGV"), ("exit", "exit code 3")])
def test_run_function_names_the_first_failure(how, what):
    with pytest.raises(RankError) as e:
        run_function(FAIL_ON, 2, args=(1, how), max_time_s=30)
    assert e.value.rank == 1, str(e.value)
    assert what in str(e.value), str(e.value)
    if how == "raise":
        assert "Traceback" in e.value.traceback
    if how == "segv":
        assert e.value.signal == "SIGSEGV"
    if how == "exit":
        assert e.value.code == 3


@pytest.mark.multiproc
def test_run_function_hung_rank_hits_the_wall_clock():
    t0 = time.time()
    with pytest.raises(FewkitError, match="timed out after 15 s") as e:
        run_function(FAIL_ON, 2, args=(1, "hang"), max_time_s=15, group_timeout_s=120)
    s = time.time() - t0
    m = re.search(r"still running: rank 0, rank 1; every rank was ended ([0-9.]+) s later", str(e.value))
    assert m, str(e.value)
    print(f"run_function hung-rank job: {s:.1f} s (limit 15 s; every rank ended {m[1]} s after it)")
    assert float(m[1]) < 6 and s < 15 + 10, s
