"""What the `ray` command that built the provider asked for, where Ray does not tell the provider.

Ray's CLI is click, and the provider is built inside `ray up` or `ray down`, so the command's
options are in the current click context. Two options need the provider's help to mean on SLURM
what Ray documents for its cloud providers:

* ``ray up --restart-only`` restarts Ray on the nodes. A node's Ray runtime is its SLURM job (or
  the login head's process), so here it means a new head: the provider reports the head out of
  date once, and Ray's own ``ray up`` logic relaunches it.
* ``ray down --keep-min-workers`` keeps "the minimal amount of workers specified in the config",
  but Ray 2.60 reads the legacy top-level ``min_workers``, which its own config loader removes:
  it keeps none. The provider hands Ray's teardown only the workers beyond each node type's
  ``min_workers``.
* ``ray down --workers-only`` leaves the head's autoscaler running, and it starts each type's
  ``min_workers`` again, as on a cloud. Ray's teardown asks every 5 s until no worker is left, so
  it would cancel each new one and wait for the next, for ever, now that the autoscaler launches
  within a second. The provider hands it only the workers that ran when it began.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import click
from ray.autoscaler.tags import NODE_KIND_HEAD, TAG_RAY_NODE_KIND, TAG_RAY_USER_NODE_TYPE


def _option(command: str, option: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.info_name == command and bool(ctx.params.get(option))


def restart_requested() -> bool:
    """Whether this process is `ray up --restart-only`."""
    return _option("up", "restart_only")


def keep_min_workers_requested() -> bool:
    """Whether this process is `ray down --keep-min-workers`."""
    return _option("down", "keep_min_workers")


def workers_only_requested() -> bool:
    """Whether this process is `ray down --workers-only`."""
    return _option("down", "workers_only")


def beyond_min_workers(
    workers: Iterable[tuple[str, str]], min_workers: Mapping[str, int]
) -> list[str]:
    """The workers (node id, node type) that `ray down --keep-min-workers` stops.

    The first ``min_workers`` of each type, in node id order, are kept: Ray's teardown asks again
    every few seconds until nothing is left to stop, and must get the same answer each time.
    """
    kept: dict[str, int] = {}
    stop = []
    for node_id, node_type in sorted(workers, key=lambda w: (len(w[0]), w[0])):
        if kept.get(node_type, 0) < min_workers.get(node_type, 0):
            kept[node_type] = kept.get(node_type, 0) + 1
        else:
            stop.append(node_id)
    return stop


def for_teardown(nodes: list[str], tags_of: Callable[[str], Mapping[str, str]], began: set[str],
                 min_workers: Mapping[str, int]) -> list[str]:  # fmt: skip
    """What `ray down` stops of ``nodes``: with ``--workers-only``, only those that ran when it
    began (``began``); with ``--keep-min-workers``, each type's ``min_workers`` stay of those."""
    if workers_only_requested():
        nodes = [n for n in nodes if n in began]
    if not keep_min_workers_requested():
        return nodes
    tags = {n: tags_of(n) for n in nodes}
    workers = {n: t.get(TAG_RAY_USER_NODE_TYPE, "") for n, t in tags.items()
               if t.get(TAG_RAY_NODE_KIND) != NODE_KIND_HEAD}  # fmt: skip
    stop = beyond_min_workers(workers.items(), min_workers)
    return [n for n in nodes if n not in workers or n in stop]


class _LegacyFieldsFilter(logging.Filter):
    """Ray 2.60 adds empty ``head_node``/``worker_nodes`` to every external provider's config
    (``MINIMAL_EXTERNAL_CONFIG``), then warns twice on each autoscaler tick that it drops them:
    tens of thousands of lines a day in the log ``ray monitor`` shows. Nothing else is hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Dropping the empty legacy field")


_LEGACY_FILTER = _LegacyFieldsFilter()


def quiet_ray_legacy_field_warnings() -> None:
    logging.getLogger("ray.autoscaler._private.util").addFilter(_LEGACY_FILTER)  # idempotent


class ConfigRefused(click.ClickException):
    """A config (or a path) the provider will not use. Ray's commands are click commands: they
    print the message (every problem, by field and value) and exit 1, with no traceback."""


class HeadStartedElsewhere(click.ClickException):
    """Another `ray up` started the head meanwhile: this one must not go on. Printed, exit 1."""
