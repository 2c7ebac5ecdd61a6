#!/usr/bin/env bash
# The demo, run by `make demo` as one of the local site's users (rsl-alice) on its login node,
# after the sysadmin's playbook deployed the site (`scripts/localsite deploy`): copy the site's
# ray-slurm.yaml unchanged, ray up, a workload that scales the cluster from 0 to 2 SLURM
# workers, ray status, ray down.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
shared=/var/tmp/rayhpc-localsite/shared   # site_shared_dir in inventories/localsite
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "$(id -un) on $(hostname): the site's files, as the sysadmin's playbook deployed them"
ls -l "$shared" "$shared/jobs"
cd "$HOME"
cp "$shared/ray-slurm.yaml" ray-slurm.yaml
cluster=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["cluster_name"])' ray-slurm.yaml)
grep -E '^cluster_name:|^  (head_mode|state_dir|ray_env|node_map):' ray-slurm.yaml

cleanup() { step "ray down ray-slurm.yaml"; ray down -y ray-slurm.yaml || true; }
trap cleanup EXIT

step "ray up ray-slurm.yaml  (head on the login node, workers are SLURM jobs)"
ray up -y ray-slurm.yaml

step "SLURM queue before the workload (no workers yet)"
squeue --me --format='%.8i %.32j %.10T %.6N'

step "workload: 4 tasks of 2 CPUs each; the cluster has 0 CPUs, so Ray asks SLURM for workers"
eval "$(ray-slurm env ray-slurm.yaml)"
python "$repo/scripts/demo_workload.py"

step "ray status (through ray exec, with the cluster's token)"
ray exec ray-slurm.yaml 'ray status'

step "idle workers are cancelled after idle_timeout_minutes (1 min on the local site)"
for _ in $(seq 60); do
    workers=$(squeue --me --noheader --format='%j' | grep -c "^ray\.$cluster\.worker\." || true)
    printf '%s  worker jobs in squeue: %s\n' "$(date +%T)" "$workers"
    [ "$workers" -eq 0 ] && break
    sleep 5
done
