"""SIGTERM and SIGINT as a request to stop at the next step boundary, not a crash mid-step.

SLURM sends SIGTERM before it kills a job (and before preemption); Ctrl-C sends SIGINT.
The first signal sets a flag the training loop reads between steps; a second one gets
the default behaviour back, so Ctrl-C twice still stops a stuck process at once.
"""

import contextlib
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # Python allows handlers only there
        yield request
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def handle(signum: int, frame: object) -> None:
        request.signum = signum
        for restored, handler in previous.items():
            signal.signal(restored, handler)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
