"""What `bench_delivery.py` and `bench_inflight.py` share around their measurements: the common
command-line options, and one run from start to clean-up (a temporary directory, the processes
started, the fakes, chatgate measured and then the floor, the summary or JSON, exit 1 when an answer
went wrong, 130 when interrupted)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench_answering import Fakes, Processes, as_json, correct, interrupt_on_signals, log, parse_env
from bench_usage import load_average


def parser(doc: str) -> argparse.ArgumentParser:
    """The script's parser (its docstring's first paragraph as the description, the rest after the
    second as the epilog) with the options both scripts take; each adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for web and worker; repeat for more")
    ap.add_argument("--no-floor", action="store_true", help="measure chatgate only")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    return ap


def run(ap: argparse.ArgumentParser, args, name: str, make_fakes: Callable[[Processes], Fakes],
        measure_bot: Callable, measure_floor: Callable, fields: dict, summary: Callable) -> int:
    """Measure chatgate, then the floor, print the result and clean up whatever happens; `fields` are
    the run's parameters for the JSON."""
    try:
        parse_env(args.env)
    except ValueError as exc:
        ap.error(str(exc))
    interrupt_on_signals()
    tmp = Path(tempfile.mkdtemp(prefix=f"chatgate-{name}-", dir="/tmp"))
    procs = Processes()
    load_before = load_average()
    try:
        fakes = make_fakes(procs)
        bot = measure_bot(args, procs, fakes, tmp)
        floor = None if args.no_floor else measure_floor(args, procs, fakes, tmp)
        result = {**fields, "env": args.env, "cores": os.cpu_count(), "load_average_before": load_before,
                  "chatgate": bot, "floor": floor}
        print(as_json(result) if args.json else summary(args, bot, floor, load_before))
        return 0 if correct(bot) else 1
    except KeyboardInterrupt:
        log("interrupted; stopping")
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
