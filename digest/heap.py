"""Python's cycle collector paused for the bulk steps that make many lasting objects.

Each time new objects outgrow the heap's count by a quarter, the collector walks every object the
process holds.  A step that keeps hundreds of thousands of objects, such as 100,000 readers' rows
or ten picks per reader, makes it walk the whole heap again and again.  Those objects form no
cycles, so reference counting frees them anyway, and the collector can wait until the step ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The cycle collector off inside the block (as it was after it); processes forked inside inherit it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
