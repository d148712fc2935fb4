"""Test only: a method that kills its own worker process on chosen images — what a segfaulting
native decoder or the OOM killer does. Nothing imports this module but a worker started with
``celery ... worker -I tests.poison_hook`` (tests/integration/test_poison.py), and it does
nothing unless ``FAULTRIG_POISON`` names "method:file-name-part" pairs (comma-separated).
Each kill is first appended to the file ``FAULTRIG_POISON_LOG`` names, to be counted."""

from __future__ import annotations

import os
import signal

from service import detection

POISON = [tuple(pair.split(":", 1)) for pair in os.environ.get("FAULTRIG_POISON", "").split(",")
          if ":" in pair]
_run_method = detection._run_method


async def _poisoned_run_method(storage, settings, name, manifest):
    file_name = manifest.file_name or ""
    if any(name == method and part in file_name for method, part in POISON):
        # Written before the kill, synchronously: the kill is the next statement.
        with open(os.environ["FAULTRIG_POISON_LOG"], "a") as log:  # noqa: ASYNC230
            log.write(f"{name} {file_name} {os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return await _run_method(storage, settings, name, manifest)


if POISON:
    detection._run_method = _poisoned_run_method
