"""The Galaxy tarball carries the product (roles, modules, playbooks, the provider's source, the
docs and example inventories), not the harness that tests it (galaxy.yml's build_ignore)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HARNESS = ("scripts/", "inventories/localsite", "tests/e2e/", "tests/support/", "tests/harness/",
           "bench/", "Makefile", "requirements/dev.txt", "requirements/bench.txt",
           "requirements/kubernetes.env")  # fmt: skip
PRODUCT = ("MANIFEST.json", "roles/site/tasks/main.yml", "roles/provider/tasks/main.yml",
           "plugins/modules/node_map.py", "playbooks/site.yml", "provider/pyproject.toml",
           "provider/src/ray_slurm/autoscaler/provider.py", "inventories/example-campus/hosts.yml",
           "docs/admin-guide.md", "requirements/constraints.txt")  # fmt: skip


def test_the_tarball_has_the_product_and_not_the_harness(tmp_path: Path) -> None:
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    subprocess.run([str(galaxy), "collection", "build", "--output-path", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    [tarball] = tmp_path.glob("rayhpc-slurm-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert [n for n in names if n.startswith(HARNESS) or "cache" in n] == []
    assert [p for p in PRODUCT if p not in names] == []
