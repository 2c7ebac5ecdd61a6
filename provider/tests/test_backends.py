"""The SLURM backend cancels a job once: `ray down` and the autoscaler ask again while it drains."""

from __future__ import annotations

import pytest

from ray_slurm import backends
from ray_slurm.backends import SlurmBackend
from ray_slurm.private import user_name
from ray_slurm.slurm import Slurm, SlurmError


def test_a_job_is_cancelled_once_while_it_drains(
    settings, cluster, fake_bin, tmp_path, monkeypatch
):
    calls = tmp_path / "calls"
    fake_bin("scancel", f'echo "$*" >> {calls}')
    backend = SlurmBackend(settings, Slurm(bin_dir=str(tmp_path / "bin")), cluster)
    now = [1000.0]
    monkeypatch.setattr(backends.time, "monotonic", lambda: now[0])

    backend.terminate(["11", "12"])
    now[0] += 5  # ray down lists the draining jobs again 5 s later
    backend.terminate(["11", "12", "13"])
    backend.terminate(["11", "12", "13"])
    me = f"--user={user_name()}"  # only ever the user's own jobs, whatever the ids
    assert calls.read_text().splitlines() == [f"{me} 11 12", f"{me} 13"]

    now[0] += backends.RECANCEL_S  # still there a minute later: ask SLURM again
    backend.terminate(["11"])
    assert calls.read_text().splitlines() == [f"{me} 11 12", f"{me} 13", f"{me} 11"]


def test_a_failed_scancel_is_retried(settings, cluster, fake_bin, tmp_path):
    fake_bin("scancel", 'echo "scancel: error: Unable to contact slurm controller" >&2; exit 1')
    backend = SlurmBackend(settings, Slurm(bin_dir=str(tmp_path / "bin")), cluster)
    for _ in range(2):
        with pytest.raises(SlurmError, match="Unable to contact"):
            backend.terminate(["21"])
    assert backend.slurm.calls == 2  # not remembered as cancelled
