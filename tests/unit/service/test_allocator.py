"""A process keeps freed image buffers for the next image instead of faulting pages in again
(service.runtime.allocator): checked by the kernel's own minor-fault count, in a fresh process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Four float64 planes of a 1024 px crop (8 MB each) live at once, touched and freed, three
# times, as a method does per image; report the minor faults of the last round.
_PROBE = """
import json, resource, sys
import numpy as np
sys.path.insert(0, {root!r})
tuned = None
if {tune}:
    from service.runtime.allocator import keep_freed_buffers
    tuned = keep_freed_buffers()
    assert keep_freed_buffers() == tuned  # once per process, the same answer
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    planes = [np.ones((1024, 1024)) for _ in range(4)]
    for plane in planes:
        plane *= 2.0
    del planes, plane
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"tuned": tuned, "faults": faults[-1]}}))
"""


def _probe(tune: bool) -> dict:
    # No transparent huge pages for numpy's arrays: one 2 MB page would stand for 512 faults,
    # however the allocator behaves.
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}
    out = subprocess.run([sys.executable, "-c", _PROBE.format(root=str(ROOT), tune=tune)],
                         check=True, capture_output=True, text=True, timeout=60, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt thresholds are glibc's")
def test_freed_image_buffers_are_reused_not_faulted_in_again():
    default, tuned = _probe(tune=False), _probe(tune=True)
    assert tuned["tuned"] is True
    # 32 MB is ~8,000 pages: glibc's defaults map and unmap them every round.
    assert default["faults"] > 2000, default
    assert tuned["faults"] < min(100, default["faults"] / 20), tuned
