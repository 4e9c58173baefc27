"""The learning-rate schedule a run asks for is the one the Trainer applies."""

from __future__ import annotations

import pytest
import torch
from transformers.optimization import get_scheduler

from forgetscale.train import scheduler_name


def _lrs(scheduler: str, warmup: int, steps: int = 12) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler(scheduler_name(scheduler, warmup), opt, num_warmup_steps=warmup, num_training_steps=steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_a_constant_schedule_with_warmup_warms_up():
    # transformers' plain "constant" would give 1.0 from the first step: the warmup silently lost
    lrs = _lrs("constant", 4)
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert lrs[4:] == pytest.approx([1.0] * 8)


@pytest.mark.parametrize("scheduler", ["constant", "linear", "cosine"])
def test_without_warmup_the_first_step_takes_the_full_rate(scheduler):
    assert _lrs(scheduler, 0)[0] == pytest.approx(1.0)
