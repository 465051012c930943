"""Progress of data-prep's image count, in the two modes of `guie_nb.training.progress`:

* terminal: a live `tqdm` bar, redrawn in place;
* anything else (a Jupyter kernel under Kaggle, papermill or nbmake, a log file, a pipe): whole
  lines formatted by `tqdm.format_meter`, printed with a newline and no carriage return, when a new
  `every_percent` mark is reached or `interval_s` seconds have passed since the last line, so a
  saved notebook or a Kaggle log holds a few readable lines, not hundreds of redraws.

In lines, the rate is measured over the interval since the previous line (the current speed).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class CountProgress:
    """Report `total` items (`unit`, e.g. "img"), `initial` of them already done (a resumed run).

    Call `update(n)` when `n` more are done and `close()` at the end (prints the last line if the
    count moved since the one before, or if no line was printed: a resumed run with nothing left).
    `disable`: print nothing. Raises ValueError for a negative total, an `initial` outside
    0..total or an `every_percent` outside (0, 100].
    """

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, *, file: TextIO | None = None,
                 every_percent: float = 10.0, interval_s: float = 60.0, tty: bool | None = None,
                 disable: bool = False, clock=time.monotonic):
        if total < 0 or not 0 <= initial <= max(total, 0):
            raise ValueError(f"total ({total}) must be >= 0 and initial ({initial}) in 0..total")
        if not 0 < every_percent <= 100:
            raise ValueError(f"every_percent must be in (0, 100], got {every_percent}")
        self.file = file if file is not None else sys.stdout
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.every, self.interval_s, self.clock = every_percent, interval_s, clock
        self.start = self.last_time = clock()
        self.n = self.last_n = initial
        self.lines = 0
        self.next_mark = self._mark_after(initial)
        tty = self.file.isatty() if tty is None else tty
        self._bar = (tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.file, leave=True)
                     if tty and not disable else None)

    def _mark_after(self, n: int) -> float:
        percent = 100.0 * n / self.total if self.total else 100.0
        return (percent // self.every + 1) * self.every

    def update(self, n: int) -> None:
        """`n` more items are done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        percent = 100.0 * self.n / self.total if self.total else 100.0
        if not self.disable and (percent + 1e-9 >= self.next_mark or now - self.last_time >= self.interval_s):
            self._print_line(now)

    def _print_line(self, now: float) -> None:
        seconds = now - self.last_time
        rate = (self.n - self.last_n) / seconds if seconds > 0 else None
        print(tqdm.format_meter(self.n, self.total, now - self.start, prefix=self.desc, unit=self.unit, rate=rate,
                                ascii=" =", ncols=80), file=self.file, flush=True)
        self.last_time, self.last_n, self.next_mark = now, self.n, self._mark_after(self.n)
        self.lines += 1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self.disable and (self.n != self.last_n or not self.lines):
            self._print_line(self.clock())
