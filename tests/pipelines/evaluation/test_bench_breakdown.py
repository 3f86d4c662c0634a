"""Where a bench phase's CPU and time go: read off real processes and real Prometheus text."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pipelines.evaluation.bench_breakdown import CpuTimeline, cpu_seconds_by_process, cpu_share, mean_ms, process_name

_BURN = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"


def test_the_timeline_shows_which_process_of_the_stack_burned_the_cpu() -> None:
    """The 50,000-turn run drifted; a per-interval view names the process that grew."""
    child = subprocess.Popen([sys.executable, "-c", _BURN])
    try:
        timeline = CpuTimeline(os.getpid(), interval_s=0.5)
        timeline.start()
        time.sleep(1.6)
        samples = timeline.stop()
    finally:
        child.kill()
        child.wait()
    assert len(samples) >= 2
    busiest = [max(sample["cores"].values(), default=0.0) for sample in samples]
    assert max(busiest) > 0.1, samples  # a spinning child shows, even on a loaded machine
    assert all(sample["at_s"] > 0 for sample in samples)


def test_a_timeline_stopped_before_its_phase_started_is_empty() -> None:
    assert CpuTimeline(os.getpid(), interval_s=0.1).stop() == []


def test_cpu_seconds_count_only_the_processes_under_the_root() -> None:
    child = subprocess.Popen([sys.executable, "-c", _BURN])
    try:
        time.sleep(0.8)
        under_me = cpu_seconds_by_process(os.getpid())
        under_child = cpu_seconds_by_process(child.pid)
    finally:
        child.kill()
        child.wait()
    assert sum(under_me.values()) > 0.1
    assert under_child == {}  # the child has no children of its own


def test_shares_are_cores_per_process_largest_first() -> None:
    shares = cpu_share({"tansu": 1.0, "worker-0": 2.0}, {"tansu": 6.0, "worker-0": 4.0, "sink": 0.5}, 10.0)
    assert shares == {"tansu": 0.5, "worker-0": 0.2, "sink": 0.05}


def test_mean_milliseconds_come_from_the_histograms_difference_over_the_phase() -> None:
    before = {"operator:execute": (10.0, 100.0), "stage:agent": (1.0, 10.0)}
    after = {"operator:execute": (12.0, 120.0), "stage:agent": (1.0, 10.0), "operator:plan": (0.01, 10.0)}
    assert mean_ms(before, after) == {
        "operator:execute": {"records": 20, "mean_ms": 100.0},
        "operator:plan": {"records": 10, "mean_ms": 1.0},
    }  # a stage with no new records in the phase is left out


def test_postgresql_backends_count_as_one_process_not_one_line_per_connection() -> None:
    titles = [["postgres: postgres postgres 127.0.0.1(37490) idle"], ["postgres: checkpointer "], ["/pg/bin/postgres"]]
    assert {process_name(argv) for argv in titles} == {"postgres"}
    assert process_name(["/x/tansu-v0.6.0-510f3e2", "broker"]) == "tansu"
    worker = ["/v/bin/python", "-m", "pipelines.cli", "worker", "--ready-file", "/r/worker-1.ready"]
    assert process_name(worker) == "worker-1"
