#!/usr/bin/env bash
# `mmjax train` on a GPU cluster under SLURM: one task per node, each seeing all of its
# node's GPUs; jax.distributed reads the job from SLURM's variables (the first node is the
# coordinator), so the command is the same on every node.
#
#   sbatch --nodes=2 tools/launch_slurm.sh experiments/gpu_node_clip.py /shared/runs/x \
#       [--set train.num_steps=1000 ...]
#
# The workdir and data must be on a filesystem (or bucket) every node sees. DRY_RUN=1
# prints the srun command instead of running it.
#SBATCH --job-name=mmjax
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#SBATCH --signal=TERM@120
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: sbatch [--nodes N] $0 CONFIG WORKDIR [--set KEY=VALUE ...]" >&2
    exit 2
fi
config=$1
workdir=$2
shift 2

# SIGTERM two minutes before the time limit (--signal above): mmjax checkpoints and exits,
# and resubmitting the same job continues where it stopped. XLA may take most GPU memory.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
command=(srun --kill-on-bad-exit=1 --ntasks-per-node=1
         mmjax train --config "$config" --workdir "$workdir" --no-progress "$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${command[@]}"
    echo
else
    exec "${command[@]}"
fi
