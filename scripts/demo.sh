#!/usr/bin/env bash
# The demo, run on the local site's login node by `make demo`: ray up the example, a workload that
# scales the cluster from 0 to 2 SLURM workers, ray status, ray down.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/ray-slurm-demo.XXXXXX)"
config="$work/ray-slurm.yaml"
sed "s|^  # state_dir: ~/.ray-slurm|  state_dir: $work/state|" "$repo/examples/ray-slurm.yaml" > "$config"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() { step "ray down"; ray down -y "$config" || true; }
trap cleanup EXIT

step "ray up $config  (head on the login node, workers are SLURM jobs)"
ray up -y --no-config-cache "$config"

step "SLURM queue before the workload (no workers yet)"
squeue --format='%.8i %.32j %.10T %.6N'

step "workload: 4 tasks of 2 CPUs each; the cluster has 0 CPUs, so Ray asks SLURM for workers"
eval "$(ray-slurm env "$config")"
python "$repo/scripts/demo_workload.py"

step "ray status (through ray exec, with the cluster's token)"
ray exec "$config" 'ray status'

step "idle workers are cancelled after idle_timeout_minutes (1 min in the example)"
for _ in $(seq 60); do
    workers=$(squeue --noheader --format='%j' | grep -c '^ray\.example\.worker\.' || true)
    printf '%s  worker jobs in squeue: %s\n' "$(date +%T)" "$workers"
    [ "$workers" -eq 0 ] && break
    sleep 5
done
