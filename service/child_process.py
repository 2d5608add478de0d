"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import signal
import sys
from typing import Any


def die_with_parent() -> None:
    """Linux, as a Popen preexec_fn: the child gets SIGTERM when its parent exits, however the parent ends."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def preexec() -> Any:
    """The preexec_fn to pass to subprocess.Popen: die_with_parent on Linux, nothing elsewhere."""
    return die_with_parent if sys.platform.startswith("linux") else None
