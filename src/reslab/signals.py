"""Every signal policy of reslab: Ctrl-C and SIGTERM caught for the length of a block (in the
main thread, where Python delivers them), and what they mean there: in a training loop, a
request to stop at the next step (StopRequest); in a grid's driver, stop the cells, then stop at
once (DriverSignals)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from reslab.errors import ExperimentInterrupted

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


class StopRequest(Catching):
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a checkpoint is never taken
    in the middle of an optimizer update. A second Ctrl-C interrupts at once, except in a worker
    of an experiment: there every signal is only a request to stop (a dying driver can send
    several), and one that arrives between cells keeps the next cell from starting."""

    worker = False
    early = None  # in a worker: the signal that asked it to stop, if one came

    @classmethod
    def in_worker(cls) -> None:
        cls.worker = True
        for s in STOP_SIGNALS:
            signal.signal(s, cls.note)

    @classmethod
    def note(cls, signum, frame) -> None:
        cls.early = cls.early or signum

    def __init__(self):
        super().__init__()
        self.signal = StopRequest.early
        self.abortable = False  # set while the first step compiles: a stop need not wait for it

    def handle(self, signum, frame):
        if StopRequest.worker:
            StopRequest.note(signum, frame)
        elif self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = self.signal or signum
        if self.abortable:
            raise KeyboardInterrupt  # nothing to save: the step being compiled has changed no weight yet


class DriverSignals(Catching):
    """Ctrl-C and SIGTERM in the driver of a grid, counted; the backend's wait loop asks first()
    (cancel the queued cells, ask the running ones to checkpoint) and again() (stop at once)."""

    def __init__(self):
        super().__init__()
        self.count, self.handled = 0, False

    def handle(self, signum, frame):
        self.count += 1

    def first(self) -> bool:
        """True once, when the first signal is seen."""
        if self.count == 1 and not self.handled:
            self.handled = True
            return True
        return False

    def again(self) -> bool:
        return self.count > 1

    @staticmethod
    def say_stopping(cancelled: int | None) -> None:
        queued = "the queued cells" if cancelled is None else f"{cancelled} queued cell(s)"
        logging.getLogger(__name__).warning(
            f"stopping: {queued} cancelled; the running ones are saving a checkpoint "
            "(Ctrl-C again to stop them at once)"
        )

    @staticmethod
    def at_once(exp_dir: Path) -> ExperimentInterrupted:
        return ExperimentInterrupted(
            "stopped at once; the running cells lost the steps since their last checkpoint. "
            f"Resume with the same command (it skips finished cells and resumes the others in {exp_dir})."
        )
