"""No process a study starts outlives it: a small watcher that ends them when the study dies.

A study killed with ``kill -9`` runs no clean-up of its own. Processes it started that do not
watch it themselves (a local Ray instance's agents, which wait a minute or more on a cluster
that died with the study) would stay. The watcher is a separate process, in a session of its
own, that notes the study's descendants every half second and, once the study is gone, kills
those still running (each checked by its start time, so a reused process id is never hit).
Linux only (it reads /proc); elsewhere it does nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WATCHER = r"""
import os, signal, sys, time
driver = int(sys.argv[1])

def processes():
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            table[int(entry)] = (int(fields[1]), fields[19])  # parent, start time
    return table

def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

seen = {}
me = os.getpid()
while alive(driver):
    table = processes()
    family, grew = {driver}, True
    while grew:
        grew = False
        for pid, (parent, start) in table.items():
            if parent in family and pid not in family and pid != me:
                family.add(pid)
                seen[pid] = start
                grew = True
    time.sleep(0.5)
table = processes()
for pid, start in seen.items():
    if pid in table and table[pid][1] == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


class Reaper:
    """The watcher of one study process; ``stop()`` when the study ended its children itself."""

    def __init__(self, process: subprocess.Popen | None):
        self.process = process

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def reap_when_gone(driver: int) -> Reaper:
    """Start the watcher of process ``driver`` (this one, usually)."""
    if not Path("/proc/self/stat").exists():
        return Reaper(None)
    process = subprocess.Popen(
        [sys.executable, "-I", "-c", WATCHER, str(driver)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C or kill of the study's process group misses it
        close_fds=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    return Reaper(process)
