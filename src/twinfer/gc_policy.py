"""The cyclic garbage collector, kept out of the request path's tail latency.

A collection of the oldest generation walks every tracked object in the process: the models' Python sides,
protobuf descriptors, Twisted, numpy, gRPC... On this machine that took 20-40 ms, all of it on the reactor thread
with the GIL held, and under load it came every few seconds: the game protocol's p99 at 16k requests/s was 40-53 ms
against a p50 of 5-8 ms. Objects alive once the server listens (imports, loaded models, configuration) live as long
as the server, so they are moved to the permanent generation (`gc.freeze`), which collections skip; what requests
allocate is still collected as before. Cyclic garbage among frozen objects is never reclaimed, which costs nothing
here: they are not garbage. The freeze is repeated after a model version is loaded while serving (hot reload, a
load request), then after collecting the young generations only: a full collection there would be one such pause.
"""

from __future__ import annotations

import gc
import time

from twisted.logger import Logger

log = Logger()


def freeze_long_lived(why: str, full: bool = True) -> None:
    """Collect (every generation, or the two young ones), then exempt every object alive now from future
    collections."""
    started = time.perf_counter()
    gc.collect(2 if full else 1)
    gc.freeze()
    log.debug("gc: {n} long-lived objects frozen after {why} ({ms:.0f} ms)", n=gc.get_freeze_count(), why=why,
              ms=(time.perf_counter() - started) * 1e3)
