"""Stand-ins for the progress tests: a clock the test advances, a stream that says it is a terminal."""

from __future__ import annotations

import io


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True
