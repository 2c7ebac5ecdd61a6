"""Where Ray nodes run: one interface (``base.Backend``) and the report every listing returns
(``nodes``: ``Seen``, ``Ended``), one package or module per backend, one factory (``factory``).

* ``slurm/``: each node is one SLURM batch job, and everything SLURM-specific (``client`` runs
  SLURM's commands, ``jobscript`` renders the node script);
* ``login``: the head as a process on the login node (``head_mode: login``), same script;
* ``kube/``: burst workers as Kubernetes pods (``podspec``), only with Kubernetes node types.

``nodestart`` describes how a Ray node starts, for the job script and the pod alike. This
package's ``__init__`` imports nothing: the job script's helpers and the config import SLURM's
parsers from ``slurm/`` without the backends.
"""
