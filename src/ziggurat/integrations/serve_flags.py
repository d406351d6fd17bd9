"""The scale-out flags of ``ziggurat serve``, apart from ``ray_serve`` so that building the
command line (every ``ziggurat serve`` start) imports neither Ray nor the application code."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The scale-out flags of ``ziggurat serve`` (they need the ``ray`` extra when used)."""
    g = parser.add_argument_group("scale-out through Ray Serve (pip install 'ziggurat[ray]')")
    g.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="serve N replicas through Ray Serve (initial count when autoscaling)")  # fmt: skip
    g.add_argument("--ray-address", metavar="ADDR",
                   help="deploy on this existing Ray cluster instead of a local one")  # fmt: skip
    g.add_argument("--min-replicas", type=int, metavar="N", help="autoscaling lower bound")
    g.add_argument("--max-replicas", type=int, metavar="N", help="autoscaling upper bound")
    g.add_argument("--target-ongoing-requests", type=float, metavar="X",
                   help="autoscaling: in-flight requests per replica to aim at (default 2)")  # fmt: skip
    g.add_argument("--num-cpus-per-replica", type=float, metavar="X",
                   help="CPUs Ray reserves per replica; also its threads unless --cpu-threads (default 1)")  # fmt: skip


def wanted(args: argparse.Namespace) -> bool:
    """Whether the ``serve`` flags ask for Ray: ``--replicas`` (even 1: one replica behind
    Ray's proxy, a baseline), a cluster address, or autoscaling bounds."""
    return bool(
        args.replicas is not None
        or args.ray_address
        or args.min_replicas is not None
        or args.max_replicas is not None
    )
