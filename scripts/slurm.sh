#!/bin/bash
# ZPPO on several nodes of GPUs under SLURM: one `accelerate launch` per node (it starts one process per GPU),
# FSDP full shard over all of them. Submit from the repository root, train.py's flags after the script:
#     OUT=/shared/runs/zppo sbatch --nodes 8 scripts/slurm.sh --student Qwen3.5-0.8B \
#         --teacher Qwen/Qwen3.5-27B-FP8 --teacher-url http://TEACHER_HOST:8000 --data data/zppo77k/zppo77k.jsonl
# The run folder ($OUT) must be on a file system every node sees (only the main process writes it); caches are
# node-local. Ten minutes before the time limit SLURM signals this script (--signal=B:USR1@600): it creates
# $OUT/stop, train.py checkpoints at its next safe point and exits, and the script requeues the job, which
# continues from that checkpoint (the script passes --resume whenever $OUT holds one). A preemption's SIGTERM
# reaches train.py itself, which does the same within SLURM's KillWait (30 s by default: raise it where a
# checkpoint takes longer).
#SBATCH --job-name=zppo
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@600
#SBATCH --output=%x-%j.out
set -uo pipefail

OUT=${OUT:?set OUT to the run folder on a shared file system}
GPUS=${GPUS_PER_NODE:-8}
# node-local caches: the hub's files, vLLM's compiled graphs and hub images are read by every process of a node
ME=${USER:-$(id -un)}
export HF_HOME=${HF_HOME:-/tmp/$ME/hf} VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/tmp/$ME/vllm}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/$ME/cache}
MAIN=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RESUME=()
[ -e "$OUT/latest" ] && RESUME=(--resume "$OUT")

REQUEUE=0
trap 'echo "time limit near: train.py stops at its next safe point with a checkpoint"; touch "$OUT/stop";
      REQUEUE=1' USR1

# srun starts this line once per node; SLURM_NODEID is the node's rank
srun --kill-on-bad-exit=1 bash -c "accelerate launch --config_file configs/fsdp.yaml \
    --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS)) --machine_rank \$SLURM_NODEID \
    --main_process_ip $MAIN --main_process_port ${MAIN_PORT:-29500} train.py --out-dir $OUT ${RESUME[*]} $*" &
RUN=$!
STATUS=0
wait $RUN || STATUS=$?
if [ "$REQUEUE" = 1 ]; then  # the trap cut the wait short: wait for train.py's checkpoint and exit
    wait $RUN
    STATUS=$?
    scontrol requeue "$SLURM_JOB_ID"
fi
exit $STATUS
