"""Profile one escalator load (cProfile in the daemon): ``profile_once.py EVENTS CONCURRENCY OUT``."""
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

events, c, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.environ["BENCH_PROFILE"] = out
with tempfile.TemporaryDirectory() as t:
    tmp = Path(t)
    rport, port = h.free_port(), h.free_port()
    receiver = h.start_receiver(rport, tmp / "r.json")
    server = h.start_escalator(tmp, h.write_config(tmp, rport), port)
    h.wait_http(port, "/healthz", proc=server)
    seconds, sent = asyncio.run(h.load(port, [h.escalator_request(i) for i in range(events)], c, 202))
    h.wait_delivered(rport, events, timeout=30)
    h.stop(server)
    got = h.receiver_results(receiver, tmp / "r.json")
    print(f"{events / seconds:.0f} ev/s, delivered {len(got)}")
