"""What ``ray-slurm check`` found: every problem (the config's own and the site's), and what
passed. A problem is the config model's ``Problem``: field, what is wrong, and the fix."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ray_slurm.config import Problem


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)  # what was checked and is fine

    def add(self, what: str, fix: str) -> None:
        self.problems.append(Problem("", what, fix))

    def extend(self, problems: Iterable[Problem]) -> None:
        self.problems.extend(problems)


def line(problem: Problem) -> str:
    return f"problem: {problem} -- fix: {problem.fix}"
