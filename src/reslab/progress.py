"""What a person watches while a network trains: the progress bar (on a terminal), TensorBoard
(--tensorboard) and the log. The loop (train.py) holds one Progress and closes it once."""

from __future__ import annotations

import sys
from pathlib import Path

from reslab import files
from reslab.errors import UserError


class Progress:
    """What a person watches: the progress bar (on a terminal), TensorBoard (--tensorboard) and
    the log. Closed once, however the loop ends."""

    def __init__(self, plan, start: int, progress: bool | None, log):
        self.plan, self.log = plan, log
        self.bar = make_progress(plan, start, progress)
        self.board = tensorboard_writer(plan.out) if plan.cfg.tensorboard and plan.group.main else None

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def period(self, row: dict) -> None:
        report_progress(self.bar, row, self.plan, self.log)
        if self.board is not None:
            for key, value in row.items():
                if key not in ("epoch", "iteration") and value is not None:
                    self.board.add_scalar(key, value, row["iteration"])
            self.board.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.board is not None:
            self.board.close()


def tensorboard_writer(out: Path):
    check_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(files.own_folder(out / "tensorboard")))


def check_tensorboard() -> None:
    """--tensorboard needs the tensorboard package: said once, before anything trains."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install 'reslab[tensorboard]'") from None


def make_progress(plan, start: int, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    name = f"{plan.cfg.arch}-{plan.cfg.depth}"
    return tqdm(total=plan.total, initial=start, desc=name, unit="it", dynamic_ncols=True, leave=False)


def report_progress(bar, row: dict, plan, log) -> None:
    text = (
        f"train err {row['train_error']:.2%} loss {row['train_loss']:.3f} | test err {row['test_error']:.2%}"
        f" | lr {row['lr']:g} | {row['images_per_second']:.0f} img/s"
    )
    if bar is not None:
        bar.set_postfix_str(text)
    elif log is not None:
        log(f"{plan.cfg.arch}-{plan.cfg.depth} epoch {row['epoch']:g} it {row['iteration']:.0f}/{plan.total}: {text}")
