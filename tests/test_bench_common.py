"""The benchmark's reading of `/proc/PID/stat`: the fields after a command name that holds
spaces and parentheses, and CPU seconds with and without the children waited for."""

from __future__ import annotations

import os

from bench.common import cpu_seconds, stat_cpu, stat_fields

TICK = os.sysconf("SC_CLK_TCK")


def test_fields_after_a_name_with_spaces_and_parentheses() -> None:
    """The name is cut at its last `)`: the parent pid and the ticks are where they belong."""
    ticks = " ".join(str(n) for n in (3 * TICK, 1 * TICK, 10 * TICK, 5 * TICK))
    stat = f"4242 (post gres: (wal) writer) S 4200 1 1 0 -1 4194368 0 0 0 0 {ticks} 20 0 1"
    fields = stat_fields(stat)
    assert fields[0] == "S"
    assert int(fields[1]) == 4200
    assert stat_cpu(fields) == 4.0
    assert stat_cpu(fields, waited_children=True) == 19.0


def test_cpu_seconds_of_this_process() -> None:
    """Read from this process's own stat file: a number of seconds, none negative."""
    assert cpu_seconds(os.getpid()) >= 0.0
