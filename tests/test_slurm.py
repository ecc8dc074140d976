"""scripts/slurm.sh as SLURM runs it, its trap and its requeue: the script gets SLURM's warning signal (USR1),
train.py stops at its next safe point with a checkpoint, the script requeues the job, and the requeued job
resumes the run. SLURM itself cannot run here: `srun` and `scontrol` are stand-ins (srun runs its command as
node 0; scontrol names this host and records a requeue); bash, accelerate launch and train.py are real."""
import os
import signal
import stat
import subprocess
import time

from conftest import ROOT
from test_distributed import free_port
from test_train import ARGS, read_metrics

SRUN = """#!/bin/bash
while [[ "$1" == --* ]]; do shift; done
SLURM_NODEID=0 exec "$@"
"""
SCONTROL = """#!/bin/bash
if [ "$1" = show ]; then echo 127.0.0.1; else echo "$@" >> "$SCONTROL_LOG"; fi
"""


def test_the_slurm_script_stops_with_a_checkpoint_requeues_and_the_job_resumes(tiny_model, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    out, log = tmp_path / "run", tmp_path / "scontrol.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OUT": str(out),
           "SLURM_JOB_NODELIST": "node1", "SLURM_NNODES": "1", "SLURM_JOB_ID": "4242", "GPUS_PER_NODE": "1",
           "MAIN_PORT": str(free_port()), "SCONTROL_LOG": str(log), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
    flags = ["--student", tiny_model, *ARGS, "--mixed-precision", "no"]
    job = subprocess.Popen(["bash", "scripts/slurm.sh", *flags, "--steps", "60"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not os.path.exists(out / "metrics.jsonl") and time.time() < deadline and job.poll() is None:
        time.sleep(0.5)
    job.send_signal(signal.SIGUSR1)  # SLURM's --signal=B:USR1@600, to the batch script
    output, _ = job.communicate(timeout=600)
    steps = [m["step"] for m in read_metrics(out)]
    assert job.returncode != 0 and "time limit near" in output and 1 <= len(steps) < 60, output[-3000:]
    assert log.read_text().split() == ["requeue", "4242"]
    assert not os.path.exists(out / "stop") and not os.path.exists(out / "lock")
    assert (out / "latest").read_text() == f"step_{steps[-1]:06d}"

    # the requeued job: --resume, because the run folder holds a checkpoint
    job = subprocess.run(["bash", "scripts/slurm.sh", *flags, "--steps", str(steps[-1] + 1)], cwd=ROOT,
                         env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert [m["step"] for m in read_metrics(out)] == steps + [steps[-1] + 1]
    assert log.read_text().split() == ["requeue", "4242"]  # no second requeue
