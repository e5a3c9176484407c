"""Test-only faults in the real worker processes of a test's sweep; never shipped.

A test that wants a fault puts this folder first on the sweep's PYTHONPATH (``fault_env``) and
names the fault in ``TUNEFLEET_TEST_FAULT``; Python imports this module at every start, and it
swaps the registered ``full`` method for one that adds a callback making the fault happen:

- ``nan``: the classifier's weights become NaN after optimizer step 2 (a non-finite loss at 3);
- ``oom:N``: ``MemoryError`` at the first step while the per-device batch is larger than N.

Nothing in ``src`` knows about it: the fault comes in the way a plugin method would.
"""

from __future__ import annotations

import os

_FAULT = os.environ.get("TUNEFLEET_TEST_FAULT")
if _FAULT:
    from support.faults.inject import install

    install(_FAULT)
