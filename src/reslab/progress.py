"""What a person watches while a network trains: the progress bar (on a terminal), TensorBoard
(--tensorboard) and the log. The loop (train.py) holds one Progress and closes it once."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from reslab import files
from reslab.errors import UserError, one_line


class Progress:
    """Closed once, however the loop ends; on a terminal a bar, elsewhere a log line per evaluation."""

    def __init__(self, plan, start: int, progress: bool | None):
        self.plan = plan
        if progress is None:
            progress = sys.stderr.isatty()
        self.bar = None
        if progress:
            from tqdm import tqdm

            name = f"{plan.cfg.arch}-{plan.cfg.depth}"
            self.bar = tqdm(total=plan.total, initial=start, desc=name, unit="it", dynamic_ncols=True, leave=False)
        self.board = tensorboard_writer(plan.out) if plan.cfg.tensorboard and plan.group.main else None

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def period(self, row: dict) -> None:
        text = (
            f"train err {row['train_error']:.2%} loss {row['train_loss']:.3f} | test err {row['test_error']:.2%}"
            f" | lr {row['lr']:g} | {row['images_per_second']:.0f} img/s"
        )
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        else:
            cfg, it = self.plan.cfg, f"{row['iteration']:.0f}/{self.plan.total}"
            logging.getLogger(__name__).info(f"{cfg.arch}-{cfg.depth} epoch {row['epoch']:g} it {it}: {text}")
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
    except Exception as e:  # an installed tensorboard that fails to import in another way
        raise UserError(
            f"--tensorboard: the tensorboard package fails to import ({one_line(e)}); reinstall it."
        ) from None
