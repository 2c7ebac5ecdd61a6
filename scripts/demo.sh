#!/usr/bin/env bash
# The demo, run on the local site's login node by `make demo`: deploy the site with Ansible
# (playbooks/site.yml renders the site's ray-slurm.yaml), ray up a copy of it as a user would, a
# workload that scales the cluster from 0 to 2 SLURM workers, ray status, ray down.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/ray-slurm-demo.XXXXXX)"
config="$work/ray-slurm.yaml"
shared=/var/tmp/rayhpc-localsite/shared   # site_shared_dir in inventories/localsite
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "deploy the site: ansible-playbook -i inventories/localsite playbooks/site.yml"
(cd "$repo" && ansible-playbook -i inventories/localsite playbooks/site.yml)
ls -l "$shared" "$shared/jobs"

step "a user's copy of the site's $shared/ray-slurm.yaml (with a private state_dir)"
sed "s|^  state_dir: .*|  state_dir: $work/state|" "$shared/ray-slurm.yaml" > "$config"
cluster=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["cluster_name"])' "$config")
grep -E '^cluster_name:|^  (head_mode|state_dir|ray_env|node_map):' "$config"

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

step "idle workers are cancelled after idle_timeout_minutes (1 min on the local site)"
for _ in $(seq 60); do
    workers=$(squeue --noheader --format='%j' | grep -c "^ray\.$cluster\.worker\." || true)
    printf '%s  worker jobs in squeue: %s\n' "$(date +%T)" "$workers"
    [ "$workers" -eq 0 ] && break
    sleep 5
done
