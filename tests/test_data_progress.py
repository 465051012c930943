"""Data-prep's image count (guie_nb.data.progress): whole lines without carriage returns for
notebooks and logs, a tqdm bar in a terminal."""

from __future__ import annotations

import io

import pytest

from _clock_helpers import Clock, Terminal
from guie_nb.data.progress import CountProgress


def test_lines_at_each_mark_and_no_carriage_return():
    out, clock = io.StringIO(), Clock()
    p = CountProgress(200, "images", "img", initial=50, file=out, every_percent=25, clock=clock)
    for _ in range(15):  # 50 -> 200 in tasks of 10 images, 2 s each: 5 img/s
        clock.t += 2.0
        p.update(10)
    p.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [ln.split("|")[0] for ln in lines] == ["images:  50%", "images:  75%", "images: 100%"]
    assert "100/200" in lines[0] and "200/200" in lines[-1]
    assert all("5.00img/s" in ln for ln in lines), lines


def test_a_stall_prints_a_line_and_close_prints_the_last_count():
    out, clock = io.StringIO(), Clock()
    p = CountProgress(1000, "images", "img", file=out, interval_s=60, clock=clock)
    clock.t = 61.0
    p.update(5)  # 0.5%: no mark, but a minute passed
    clock.t = 62.0
    p.update(5)
    p.close()  # the count moved since the last line
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "5/1000" in lines[0] and "10/1000" in lines[1]
    resumed = io.StringIO()
    CountProgress(10, "images", "img", initial=10, file=resumed).close()  # nothing left to do: one line
    assert resumed.getvalue().startswith("images: 100%|") and resumed.getvalue().count("\n") == 1


def test_terminal_gets_a_bar_and_disable_prints_nothing():
    term = Terminal()
    p = CountProgress(10, "images", "img", file=term)
    p.update(10)
    p.close()
    assert "\r" in term.getvalue() and "10/10" in term.getvalue()
    quiet = io.StringIO()
    p = CountProgress(10, "images", "img", file=quiet, disable=True)
    p.update(10)
    p.close()
    assert quiet.getvalue() == ""
    with pytest.raises(ValueError, match="every_percent"):
        CountProgress(10, "images", every_percent=0)
    with pytest.raises(ValueError, match="initial"):
        CountProgress(10, "images", initial=11)
