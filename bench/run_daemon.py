"""``escalator`` CLI for the benchmarks, with the per-address send limit switched off.

The delivery throttle allows 10 messages a minute to one (channel, address)
(``escalator.delivery.pipeline.ADDRESS_LIMITS``); the benchmarks send thousands of first notifications to
one person, and Alertmanager, the comparison, has no such limit. Everything else is the real
daemon: ``python bench/run_daemon.py run`` = ``escalator run``.

``BENCH_ADDRESS_LIMITS=real``: keep the daemon's own per-address limit (``storm.py``).

The delivery process (``escalator.service.delivery_process``) is started as this script too
(``run_daemon.py delivery-child``), so the same limits hold in it.

``BENCH_PROFILE=FILE``: run under cProfile and write the stats to FILE on exit (read them with
``python -m pstats FILE``).
"""

import cProfile
import os
import sys
import time

from escalator.cli import main
from escalator.delivery import pipeline as delivery
from escalator.service import delivery_process

if os.environ.get("BENCH_ADDRESS_LIMITS") != "real":
    delivery.Throttle.__init__.__defaults__ = ((), None)  # (address_limits, overrides)

delivery_process.COMMAND = [sys.executable, __file__, "delivery-child"]

if __name__ == "__main__":
    entry = main
    if sys.argv[1:] == ["delivery-child"]:  # the delivery process (its profile: FILE.delivery)
        entry = delivery_process.child_main
        if os.environ.get("BENCH_PROFILE"):
            os.environ["BENCH_PROFILE"] += ".delivery"
    if out := os.environ.get("BENCH_PROFILE"):
        profile = cProfile.Profile(time.process_time)  # CPU time, not waits
        try:
            code = profile.runcall(entry)
        finally:
            profile.dump_stats(out)
        sys.exit(code)
    sys.exit(entry())
