"""The harness the end-to-end tests, the fault tests and the benchmarks share.

``procs`` runs commands and waits; ``accounts`` is who runs them (one of the site's unprivileged
users, or the harness itself); ``cluster`` is a Ray cluster an account launches with real
``ray up``/``ray down`` from a copy of the example config; ``drivers`` are the Ray programs the
tests and benchmarks run on a cluster; ``jobs`` reads SLURM's queue.

Import it as ``support`` (``tests/`` is on the path: ``pytest.ini``'s ``pythonpath``, and the
benchmarks add it themselves).
"""
