"""The answering benchmarks still run, end to end, and their own checks hold: a few questions through
the Procfile's processes, the lean fakes, the load generator and the floor (scripts/bench_*.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPTS / script), *args, "--json"], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_bench_delivery_answers_every_question_once_and_accounts_for_the_workers_cpu():
    result = run("bench_delivery.py", "--rate", "4", "--duration", "1.5")
    bot, floor = result["chatgate"], result["floor"]
    assert bot["offered"] == bot["acked"] == bot["answered_once"] == 6
    assert bot["answered_twice_or_more"] == bot["answered_unacked"] == bot["answered_wrong_user"] == 0
    assert floor["offered"] == floor["answered_once"] == 6 and floor["errors"] == 0
    assert bot["ack_to_push_p50_ms"] > 0 and floor["offer_to_push_p50_ms"] > 0
    assert bot["worker_cpu_ms_per_answer"] > 0 and floor["floor_cpu_ms_per_answer"] > 0
    # the /proc reading of the worker's tree (reaped children included) agrees with wait4 at its exit
    check = bot["worker_cpu_check"]
    assert 0.7 * check["wait4_s"] <= check["proc_tree_s"] <= check["wait4_s"] + 0.05


def test_bench_inflight_counts_the_llm_calls_open_at_once_and_the_workers_memory():
    result = run("bench_inflight.py", "-n", "3", "--window", "0.3", "--model-seconds", "1.5", "--no-floor")
    bot = result["chatgate"]
    assert bot["offered"] == bot["acked"] == bot["answered_once"] == bot["answered"] == 3
    assert bot["peak_llm_calls"] >= 2  # the slow answers overlap
    assert bot["queue_p50_s"] >= 0 and bot["answer_p50_s"] >= 1.5  # nothing answers before the model does
    assert 0 < bot["pss_idle_mb"] <= bot["pss_peak_mb"]


def test_bench_cards_times_the_first_visible_update_and_checks_every_card():
    result = run("bench_cards.py", "-n", "3", "--model-seconds", "1.5", "--chunks", "15", "--rate", "5")
    cards, text = result["cards"], result["text"]
    assert cards["correct"] == 3 and text["correct"] == 3 and cards["refusals"] == 0
    assert 0 < cards["first_visible_s"][0] < text["first_visible_s"][0]  # cards show words before the end
    assert cards["peak_ops_per_card_per_s"] <= 10 and cards["updates_per_card_per_s"] > 0
    assert result["floor_update_s"] > 0
