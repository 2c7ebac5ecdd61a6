"""``ray-slurm check CONFIG``: is this config ready for ``ray up`` on this site?

First the config itself, the way ``ray up`` sees it: Ray's defaults and schema, then the
provider's own validation (``config.load``: every problem at once). Then the site: the
partitions the node types use exist, are up and have a node that fits the request; the node map
covers SLURM's nodes; the Ray environment the jobs run has ``ray`` and ``ray-slurm`` of this
version; the login node owns ``head_ip``; the state directory and token are private; the head's
temp root and ports are usable; Kubernetes node types can reach their API, namespaces and (with
``--probe-pods``) the pod network (``check.kube``). Every problem is printed on one line with its
fix.

Exit codes: 0 ready, 1 problems found, 2 the config file cannot be read (usage).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray_slurm import config
from ray_slurm.cli.check.kube import check_kubernetes
from ray_slurm.cli.check.report import Report, line

__all__ = ["EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "Report", "check", "line", "main"]
from ray_slurm.backends.slurm.client import Slurm, SlurmError
from ray_slurm.backends.slurm.nodemap import NodeAddresses
from ray_slurm.cli.check.site import Site, check_login_head, check_ray_env, check_slurm, check_state

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def check_schema(raw: dict[str, Any], report: Report) -> None:
    """What ``ray up`` does before the provider sees the config: defaults, then Ray's schema."""
    # Ray's launcher code: imported here, by the one check that needs it (~1 s).
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config

    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.ERROR)
    try:
        prepared = config.fillout_resources(prepare_config(copy.deepcopy(raw)))
    except Exception as exc:  # Ray's own checks raise anything from KeyError to ValueError
        report.add(
            f"Ray refuses the config: {type(exc).__name__}: {exc}",
            "compare it with examples/ray-slurm.yaml",
        )
        return
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(prepared), key=lambda e: list(map(str, e.path)))
    for error in errors:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        report.add(
            f"{where}: {error.message} (Ray's cluster schema)",
            "remove or correct the key (allowed keys: Ray's ray-schema.json; "
            "SLURM settings go in provider or node_config)",
        )
    if not errors:
        report.passed.append("Ray's schema")


def check_config(loaded: config.Loaded, report: Report) -> None:
    """The provider's own rules (``config.load``): every problem, with its fix."""
    report.extend(loaded.problems)
    if not loaded.problems and loaded.settings is not None:
        settings = loaded.settings
        report.passed.append(
            f"config ({len(settings.node_types)} node types, head_mode {settings.head_mode})"
        )


def check(path: str, slurm: Slurm | None = None, probe_pods: bool = False) -> Report:
    """Every problem of a config file on this site (raises OSError if it cannot be read)."""
    report = Report()
    loaded = config.load_file(path)
    raw = loaded.raw
    if not isinstance(raw, dict) or not isinstance(raw.get("provider"), dict):
        report.extend(loaded.problems)  # not YAML, or not a cluster config: nothing else to check
        return report
    check_schema(raw, report)
    check_config(loaded, report)
    settings = loaded.settings
    if settings is None:  # a shape no rule expects: its problem says what to compare it with
        return report
    site = Site.from_settings(settings)
    slurm = slurm or Slurm(site.slurm_bin, site.slurm_timeout_s)
    check_slurm(site, slurm, report)
    check_ray_env(site, report)
    check_login_head(site, slurm, report)
    check_state(site, report)
    if settings.kube_types and not loaded.problems:
        try:
            ip = settings.head_ip or NodeAddresses(slurm).login_ip()
        except (SlurmError, StopIteration, OSError):
            ip = "0.0.0.0"  # noqa: S104 - the head address problem is reported above
        check_kubernetes(settings, report, ip, probe_pods)
    return report


def lines(report: Report, path: str) -> Iterator[str]:
    for problem in report.problems:
        yield line(problem)
    if report.problems:
        n = len(report.problems)
        yield f"{path}: {n} problem{'s' if n > 1 else ''} (checked: {'; '.join(report.passed)})"
    else:
        yield f"{path}: ready for `ray up` (checked: {'; '.join(report.passed)})"


def main(path: str, slurm: Slurm | None = None, probe_pods: bool = False) -> int:
    try:
        report = check(path, slurm, probe_pods)
    except OSError as exc:
        print(f"ray-slurm check: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    for text in lines(report, path):
        print(text)
    return EXIT_PROBLEMS if report.problems else EXIT_OK
