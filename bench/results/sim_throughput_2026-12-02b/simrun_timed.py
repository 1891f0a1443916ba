"""`sim run` end to end (``python -m cli run ...`` arguments) with bench/sim_throughput.py's PhaseTimer
installed: prints the phase times (wall and CPU) as one ``[phases] {json}`` line on stderr.

    PYTHONPATH=$PWD python bench/results/sim_throughput_2026-12-02b/simrun_timed.py run --treatment hllm ...
"""

import atexit
import json
import os
import sys
import time

T0, C0 = time.perf_counter(), time.process_time()
sys.path.insert(0, "bench")
from sim_throughput import PhaseTimer  # noqa: E402

PT = PhaseTimer().__enter__()


def done() -> None:
    try:
        ph = PT.phases()
    except KeyError:  # the run stopped before its simulate phase ended
        ph = dict(PT.t)
    ph["total_wall_s"] = round(time.perf_counter() - T0, 3)
    ph["total_cpu_s"] = round(time.process_time() - C0, 3)
    if ph.get("simulate_cpu_s"):
        ph["oracle_over_simulate_cpu"] = round(ph["oracle_cpu_s"] / ph["simulate_cpu_s"], 3)
        ph["oracle_over_simulate"] = round(ph["oracle_s"] / ph["simulate_s"], 3)
    ph["load_avg_end"] = os.getloadavg()
    print("[phases] " + json.dumps(ph), file=sys.stderr)


atexit.register(done)
sys.argv = ["sim"] + sys.argv[1:]
import cli  # noqa: E402

cli.main()
