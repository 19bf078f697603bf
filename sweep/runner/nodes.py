"""The nodes of a Ray cluster a sweep runs on (--address): which left and which joined, named.

Ray and Tune survive a lost node by themselves (its trials fail and are retried from their last
checkpoints elsewhere, --max-failures), but say nothing a person would read as "node n2 is gone".
The Tune callback (sweep/runner/callback.py) asks this watch every NODES_EVERY_S seconds and logs
one line per change. In a Slurm job the script names each node's address (GANSWEEP_SLURM_NODES,
"n1=10.0.0.1 n2=10.0.0.2", sweep/runner/slurm_job.sh); elsewhere a node is its host and address.
"""
from __future__ import annotations

import logging
import os
import time

NODES_EVERY_S = 5.0  # how often the cluster's alive nodes are read (one GCS call)
SLURM_NODES = "GANSWEEP_SLURM_NODES"  # "NAME=IP ...", exported by the Slurm job script

log = logging.getLogger("gansweep")


class NodeWatch:
    """The alive Ray nodes at the last look, by node id (two nodes may share an address)."""

    def __init__(self, names: dict[str, str] | None = None):
        """names: IP address -> the name to print (a Slurm node's)."""
        self.names = names or {}
        self.alive: dict[str, dict] | None = None  # node id -> its ray.nodes() entry, None before the first look
        self.last = 0.0
        self.lost: list[str] = []  # every node that left during this session, named

    @classmethod
    def from_environment(cls) -> "NodeWatch":
        pairs = [p.split("=", 1) for p in os.environ.get(SLURM_NODES, "").split() if "=" in p]
        return cls({ip: name for name, ip in pairs})

    def name(self, node: dict) -> str:
        ip = node.get("NodeManagerAddress", "")
        return f"{self.names[ip]} ({ip})" if ip in self.names else f"{node.get('NodeManagerHostname', '')} ({ip})"

    def look(self, nodes: list[dict]) -> list[str]:
        """The lines for what changed since the last look, given ray.nodes() (by node id: two nodes
        may share an address)."""
        now = {n["NodeID"]: n for n in nodes if n.get("Alive")}
        before, self.alive = self.alive, now
        if before is None:
            return []
        lines = []
        for gone in (before[i] for i in before if i not in now):
            self.lost.append(self.name(gone))
            lines.append(f"Ray node {self.name(gone)} left the cluster: its trials fail and are retried from their "
                         f"last checkpoints on the {len(now)} node(s) left")
        for new in (now[i] for i in now if i not in before):
            lines.append(f"Ray node {self.name(new)} joined the cluster: it gets trials from now on")
        return lines

    def check(self) -> None:
        """Look at most every NODES_EVERY_S seconds, and log what changed."""
        import ray

        if time.monotonic() - self.last < NODES_EVERY_S or not ray.is_initialized():
            return
        self.last = time.monotonic()
        for line in self.look(ray.nodes()):
            log.warning("%s", line)
