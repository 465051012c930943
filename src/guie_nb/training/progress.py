"""Progress of one training epoch: steps done, images/s, running loss, learning rate, time left.

Two modes, chosen by whether the output is a terminal:

* terminal: a live `tqdm` bar, redrawn in place at most every `min_interval_s` seconds;
* anything else (a Jupyter kernel under Kaggle, papermill or nbmake, a log file, a pipe): whole
  lines, formatted by `tqdm.format_meter` but printed with a newline and no carriage return, when a
  new `every_percent` mark is reached or `interval_s` seconds have passed since the last line. A
  saved notebook or a Kaggle log then holds a few readable lines per epoch, not hundreds of
  carriage-return redraws.

In lines, images/s is measured over the interval since the previous line (the current speed: the
first line of a run includes the step's compilation) and the time left is extrapolated from it; the
terminal bar shows the epoch's mean speed.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| step {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class EpochProgress:
    """Report the progress of epoch `epoch` (1-based) of `epochs`, `steps` steps of `batch_size` images.

    `done`: steps already done when the epoch (re)starts, e.g. after a resume. Call `update` after
    each compiled call with the epoch's steps done so far, the running mean loss and the learning
    rate; `write` for a message in between (kept off the bar); `close` at the epoch's end.
    """

    def __init__(self, epoch: int, epochs: int, steps: int, batch_size: int, done: int = 0, *,
                 file: TextIO | None = None, every_percent: float = 25.0, interval_s: float = 60.0,
                 min_interval_s: float = 1.0, tty: bool | None = None, clock=time.monotonic):
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps ({steps}) and batch_size ({batch_size}) must be >= 1")
        if not 0 < every_percent <= 100:
            raise ValueError(f"every_percent must be in (0, 100], got {every_percent}")
        self.file = file if file is not None else sys.stdout
        self.tty = self.file.isatty() if tty is None else tty
        self.desc, self.steps, self.batch_size = f"epoch {epoch}/{epochs}", steps, batch_size
        self.every, self.interval_s, self.clock = every_percent, interval_s, clock
        self.start = self.last_time = clock()
        self.done = self.last_done = self.first_done = done
        self.next_mark = self._mark_after(done)
        self._bar = (tqdm(total=steps, initial=done, desc=self.desc, file=self.file, mininterval=min_interval_s,
                          bar_format=BAR_FORMAT, dynamic_ncols=True, leave=True) if self.tty else None)

    def _mark_after(self, done: int) -> float:
        percent = 100.0 * done / self.steps
        return (percent // self.every + 1) * self.every

    def update(self, done: int, loss: float, learning_rate: float) -> None:
        """`done` steps of this epoch are finished; `loss`: mean loss so far this epoch."""
        now, postfix = self.clock(), f"loss {loss:.4f}, lr {learning_rate:.2e}"
        if self._bar is not None:
            self._update_bar(now, done, postfix)
        elif 100.0 * done / self.steps + 1e-9 >= self.next_mark or now - self.last_time >= self.interval_s:
            self._print_line(now, done, postfix)
        self.done = done

    def _speed(self, steps: int, seconds: float) -> str:
        return f"{steps * self.batch_size / seconds:.1f} img/s" if seconds > 0 else "? img/s"

    def _update_bar(self, now: float, done: int, postfix: str) -> None:
        # the epoch's mean speed: the bar is redrawn too often for a meaningful window
        speed = self._speed(done - self.first_done, now - self.start)
        self._bar.set_postfix_str(f"{speed}, {postfix}", refresh=False)
        self._bar.update(done - self._bar.n)

    def _print_line(self, now: float, done: int, postfix: str) -> None:
        seconds = now - self.last_time
        line = tqdm.format_meter(done, self.steps, now - self.start, prefix=self.desc, bar_format=BAR_FORMAT,
                                 rate=(done - self.last_done) / seconds if seconds > 0 else None, ascii=" =",
                                 postfix=f"{self._speed(done - self.last_done, seconds)}, {postfix}")
        print(line, file=self.file, flush=True)
        self.last_time, self.last_done, self.next_mark = now, done, self._mark_after(done)

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
