"""A local Ray cluster for the cluster sweep's tests, run with the Ray environment's Python (``.venv-ray``): a head
node and N worker nodes with one logical GPU each (``ray.cluster_utils.Cluster``), driven over stdin and stdout.

    python tests/ray_cluster_helper.py N

prints ``{"address": ..., "workers": [node ids]}`` once the nodes are up, then answers one JSON line per command:
``remove NODE_ID`` (the node dies: its processes are killed, not shut down), ``add [CACHE]`` (a fresh worker node
joins; with CACHE, its cells' scratch folder, ``COMPTRUST_NODE_CACHE``, is that folder), ``quit`` (or end of input:
the cluster is shut down).
"""

from __future__ import annotations

import json
import os
import sys

os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"

from ray.cluster_utils import Cluster


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        workers = {}
        for _ in range(n):
            node = cluster.add_node(num_cpus=1, num_gpus=1)
            workers[node.node_id] = node
        cluster.wait_for_nodes()
        print(json.dumps({"address": cluster.address, "workers": list(workers)}), flush=True)
        for line in sys.stdin:
            command, *args = line.split()
            if command == "remove":
                cluster.remove_node(workers.pop(args[0]), allow_graceful=False)
                print(json.dumps({"ok": True}), flush=True)
            elif command == "add":
                env = {"COMPTRUST_NODE_CACHE": args[0]} if args else None
                node = cluster.add_node(num_cpus=1, num_gpus=1, env_vars=env)
                workers[node.node_id] = node
                print(json.dumps({"ok": True, "node": node.node_id}), flush=True)
            elif command == "quit":
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
