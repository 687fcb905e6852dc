"""Ctrl-C and SIGTERM caught for the length of a block (in the main thread, where Python delivers
them); what a signal means is the subclass's `handle`."""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Catching:
    def __init__(self):
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self.previous[s] = signal.signal(s, self.handle)
        return self

    def handle(self, signum, frame) -> None:
        raise NotImplementedError

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)
