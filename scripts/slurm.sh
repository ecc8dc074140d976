#!/bin/bash
# ZPPO on several nodes of 8 GPUs under SLURM: one `accelerate launch` per node (it starts 8 processes), FSDP
# full shard over all of them, the teacher served elsewhere. Submit from the repository root:
#     OUT=/shared/runs/zppo TEACHER_URL=http://teacher-host:8000 sbatch --nodes 8 scripts/slurm.sh
# The run folder ($OUT) must be on a file system every node sees (only the main process writes it); caches
# are node-local. A requeued job (--requeue, or `scontrol requeue`) continues the run from its newest
# checkpoint: the script passes --resume whenever $OUT holds one.
#SBATCH --job-name=zppo
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

OUT=${OUT:?set OUT to the run folder on a shared file system}
TEACHER_URL=${TEACHER_URL:?set TEACHER_URL to the teacher server (vllm serve Qwen/Qwen3.5-27B-FP8 ...)}
GPUS=${GPUS_PER_NODE:-8}
# node-local caches: the hub's files, vLLM's compiled graphs and hub images are read by every process of a node
export HF_HOME=${HF_HOME:-/tmp/$USER/hf} VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/tmp/$USER/vllm}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/$USER/cache}
MAIN=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RESUME=()
[ -e "$OUT/latest" ] && RESUME=(--resume "$OUT")

# srun starts this line once per node; SLURM_NODEID is the node's rank
srun --kill-on-bad-exit=1 bash -c "accelerate launch --config_file configs/fsdp.yaml \
    --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS)) --machine_rank \$SLURM_NODEID \
    --main_process_ip $MAIN --main_process_port 29500 train.py \
    --student Qwen3.5-0.8B --teacher Qwen/Qwen3.5-27B-FP8 --teacher-url $TEACHER_URL \
    --data data/zppo77k/zppo77k.jsonl --out-dir $OUT ${RESUME[*]} $*"
