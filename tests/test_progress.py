"""Training progress (guie_nb.training.progress): whole lines without carriage returns for notebooks
and logs, a tqdm bar in a terminal."""

from __future__ import annotations

import io

import pytest

from _clock_helpers import Clock, Terminal
from guie_nb.training.progress import EpochProgress


def run(progress, clock, steps, start=0, seconds_per_step=0.5, stall_at=None):
    for done in range(start + 1, steps + 1):
        clock.t += 70.0 if done == stall_at else seconds_per_step
        progress.update(done, loss=3.0 - 0.01 * done, learning_rate=1e-3)
    progress.close()


def test_lines_at_each_quarter_with_speed_loss_and_lr_and_no_carriage_return():
    out, clock = io.StringIO(), Clock()
    run(EpochProgress(3, 12, 40, batch_size=64, file=out, clock=clock), clock, 40)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [ln.split("|")[0] for ln in lines] == ["epoch 3/12:  25%", "epoch 3/12:  50%", "epoch 3/12:  75%",
                                                  "epoch 3/12: 100%"]
    # 10 steps of 64 images in 5 s; 20 steps left at 2 steps/s
    assert "step 20/40 [00:10<00:10, 128.0 img/s, loss 2.8000, lr 1.00e-03]" in lines[1], lines[1]


def test_a_slow_stretch_prints_a_line_after_interval_s_and_a_resumed_epoch_starts_at_its_step():
    out, clock = io.StringIO(), Clock()
    run(EpochProgress(1, 2, 100, batch_size=8, done=30, file=out, clock=clock, interval_s=60), clock, 100,
        start=30, stall_at=35)
    lines = out.getvalue().splitlines()
    assert [ln.split("|")[2].split(" [")[0] for ln in lines] == [" step 35/100", " step 50/100", " step 75/100",
                                                                 " step 100/100"]
    assert "[01:12<15:36, 0.6 img/s," in lines[0], lines[0]  # 5 steps x 8 images in 72 s; 65 steps left


def test_a_terminal_gets_a_tqdm_bar_and_messages_stay_off_it():
    out, clock = Terminal(), Clock()
    progress = EpochProgress(2, 5, 10, batch_size=4, file=out, clock=clock, min_interval_s=0)
    progress.update(5, loss=1.5, learning_rate=2e-4)
    progress.write("checkpoint ckpt-5")
    run(progress, clock, 10, start=5)
    text = out.getvalue()
    assert "\r" in text and "checkpoint ckpt-5\n" in text
    assert text.rstrip("\n").split("\r")[-1].startswith("epoch 2/5: 100%|"), text[-200:]


@pytest.mark.parametrize("kwargs, match", [({"steps": 0}, "steps"), ({"every_percent": 0}, "every_percent")])
def test_bad_settings_fail_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EpochProgress(**{"epoch": 1, "epochs": 1, "steps": 10, "batch_size": 2, "file": io.StringIO(), **kwargs})
