"""``ray-slurm check CONFIG``: is this config ready for ``ray up`` on this site?

First the config itself, the way ``ray up`` sees it: Ray's defaults and schema, then the
provider's own validation (``cli.load_config``: every problem at once). Then the site: the
partitions the node types use exist, are up and have a node that fits the request; the node map
covers SLURM's nodes; the Ray environment the jobs run has ``ray`` and ``ray-slurm`` of this
version; the login node owns ``head_ip``; the state directory and token are private; the head's
temp root and ports are usable; Kubernetes node types can reach their API, namespaces and (with
``--probe-pods``) the pod network (``kubecheck``). Every problem is printed on one line with its
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

import yaml

from ray_slurm.config import ConfigError, Settings
from ray_slurm.sitecheck import (
    Report,
    Site,
    check_login_head,
    check_ray_env,
    check_slurm,
    check_state,
    route_ip,
)
from ray_slurm.slurm import Slurm, SlurmError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


# ------------------------------------------------------------------------------ the config


def _config_fix(problem: str) -> str:
    """A fix for one of the provider's own config problems (they name the field already)."""
    hints = (
        ("unknown key", "remove the key or correct its spelling"),
        ("required", "add it"),
        ("disagrees with", "make both equal, or leave resources out (filled in from node_config)"),
        ("too long", "use a short node-local path such as /tmp"),
        ("node map", "point provider.node_map at a readable YAML file of `node: ip` lines"),
        ("disable_node_updaters", "set provider.disable_node_updaters: true"),
        ("expected a whole number", "write a whole number"),
    )
    for needle, fix in hints:
        if needle in problem:
            return fix
    return "correct this value (see README.md, 'Writing ray-slurm.yaml')"


def check_schema(raw: dict[str, Any], report: Report) -> None:
    """What ``ray up`` does before the provider sees the config: defaults, then Ray's schema."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config

    from ray_slurm import config

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


def check_config(path: str, raw: dict[str, Any], report: Report) -> Settings | None:
    from ray_slurm.cli import load_config

    try:
        settings, _ = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            report.add(problem, _config_fix(problem))
        return None
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a shape bootstrap missed
        report.add(
            f"{path}: cannot be read as a cluster config ({type(exc).__name__}: {exc})",
            "compare its structure with examples/ray-slurm.yaml",
        )
        return None
    report.passed.append(
        f"config ({len(settings.node_types)} node types, head_mode {settings.head_mode})"
    )
    return settings


def check(path: str, slurm: Slurm | None = None, probe_pods: bool = False) -> Report:
    """Every problem of a config file on this site (raises OSError if it cannot be read)."""
    report = Report()
    text = Path(path).read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        report.add(
            f"{path} is not valid YAML: {' '.join(str(exc).split())}", "correct the YAML syntax"
        )
        return report
    if not isinstance(raw, dict) or not isinstance(raw.get("provider"), dict):
        report.add(
            f"{path}: not a Ray cluster config (no provider section)",
            "start from examples/ray-slurm.yaml",
        )
        return report
    check_schema(raw, report)
    settings = check_config(path, raw, report)
    site = Site.from_settings(settings) if settings else Site.from_raw(raw)
    slurm = slurm or Slurm(site.slurm_bin, site.slurm_timeout_s)
    check_slurm(site, slurm, report)
    check_ray_env(site, report)
    check_login_head(site, slurm, report)
    check_state(site, report)
    if settings is not None and settings.kube_types:
        from ray_slurm.kubecheck import check_kubernetes

        try:
            ip = settings.head_ip or route_ip(slurm)
        except (SlurmError, StopIteration, OSError):
            ip = "0.0.0.0"  # noqa: S104 - the head address problem is reported above
        check_kubernetes(settings, report, ip, probe_pods)
    return report


def lines(report: Report, path: str) -> Iterator[str]:
    for problem in report.problems:
        yield problem.line()
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
    for line in lines(report, path):
        print(line)
    return EXIT_PROBLEMS if report.problems else EXIT_OK
