"""Soak the server at a fraction of its measured capacity and check nothing is lost or leaked.

Starts ``python -m ziggurat.server`` on 127.0.0.1 with the tests' ``linear`` model, measures
capacity (closed loop, 16 keep-alive connections), warms up, then offers ``--fraction`` of that
rate for ``--minutes``, one minute per segment. Prints one line per minute (sent, answered,
statuses, socket errors, p50/p99, server RSS) and a JSON summary; exits 1 if a request was lost
(sent != answered), any answer was not 200, a socket error occurred, or RSS grew by 5 % or more
from the end of the warm-up.

    .venv/bin/python benchmarks/server/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.server.conftest import ServerProcess, build_repo  # noqa: E402
from tests.server.loadgen import capacity, infer_request, paced, rss_bytes  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    ap.add_argument("--fraction", type=float, default=0.8, help="share of capacity offered")
    ap.add_argument("--workers", type=int, default=16, help="keep-alive connections")
    ap.add_argument("--warmup-s", type=float, default=20.0)
    args = ap.parse_args()

    repo = build_repo(Path(tempfile.mkdtemp(prefix="zg-soak-")))
    srv = ServerProcess(str(repo / "linear.onnx"), "--no-access-log")
    srv.wait_ready()
    req = infer_request()
    try:
        cap = asyncio.run(capacity(srv.port, req, seconds=5.0, workers=args.workers))
        rate = args.fraction * cap
        print(f"capacity {cap:.0f} req/s; offering {rate:.0f} req/s for {args.minutes} min")
        asyncio.run(paced(srv.port, rate, args.warmup_s, req, args.workers))
        rss0 = rss_bytes(srv.proc.pid)
        totals = {"sent": 0, "answered": 0, "non_200": 0, "socket_errors": 0}
        segments = max(1, round(args.minutes))
        seg_s = args.minutes * 60 / segments
        t0 = time.time()
        for i in range(segments):
            t = asyncio.run(paced(srv.port, rate, seg_s, req, args.workers))
            rss = rss_bytes(srv.proc.pid)
            totals["sent"] += t.sent
            totals["answered"] += t.answered
            totals["non_200"] += t.answered - t.statuses.get(200, 0)
            totals["socket_errors"] += sum(t.errors.values())
            print(
                f"min {i + 1:>3}: sent {t.sent} answered {t.answered} statuses "
                f"{dict(t.statuses)} errors {dict(t.errors)} p50 {t.p(0.5) * 1e3:.2f} ms "
                f"p99 {t.p(0.99) * 1e3:.2f} ms rss {rss / 2**20:.1f} MiB",
                flush=True,
            )
        rss1 = rss_bytes(srv.proc.pid)
        summary = {
            **totals,
            "capacity_rps": round(cap),
            "offered_rps": round(rate),
            "achieved_rps": round(totals["answered"] / (time.time() - t0)),
            "minutes": args.minutes,
            "rss_start_mib": round(rss0 / 2**20, 1),
            "rss_end_mib": round(rss1 / 2**20, 1),
            "rss_growth_pct": round(100 * (rss1 - rss0) / rss0, 2),
        }
    finally:
        code = srv.stop()
    summary["server_exit"] = code
    print(json.dumps(summary))
    ok = (
        summary["sent"] == summary["answered"]
        and summary["non_200"] == 0
        and summary["socket_errors"] == 0
        and summary["rss_growth_pct"] < 5
        and code == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
