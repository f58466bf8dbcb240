"""The report's verdict rule: a difference is claimed only when both the corrected bootstrap and, with several
seeds, the t interval over seeds exclude 0; otherwise it says what could have been detected."""

import math

from edgerlhf.study.report import _verdict
from edgerlhf.study.stats import Comparison, Interval


def _row(diff, t_lo, t_hi, p_holm, seeds=(1, 2, 3), mde=0.2):
    n = len(seeds)
    cmp = Comparison(diff, Interval(diff, t_lo, t_hi, n, "seeds"), Interval(diff, diff - 0.1, diff + 0.1, n, "both"),
                     0.6, p_holm)
    return {"a": "ppo-int8", "b": "ppo-fp32", "seeds": list(seeds), "cmp": cmp, "p_holm": p_holm, "mde": mde}


def test_a_difference_needs_both_intervals():
    assert _verdict(_row(-0.2, -0.3, -0.1, 0.01)).startswith("ppo-int8 worse than ppo-fp32")
    assert _verdict(_row(+0.2, 0.05, 0.35, 0.01)).startswith("ppo-int8 better than ppo-fp32")
    assert _verdict(_row(-0.2, -0.5, 0.1, 0.01)).startswith("undecided")  # the t interval over seeds spans 0


def test_no_difference_states_the_power_and_one_seed_says_so():
    v = _verdict(_row(0.01, -0.1, 0.12, 0.8, mde=0.31))
    assert "no difference found" in v and "0.31" in v and "3 seeds" in v
    one = _verdict(_row(0.01, math.nan, math.nan, 0.8, seeds=(42,), mde=math.nan))
    assert "one seed: RL variance not measured" in one
    assert "one seed" in _verdict(_row(0.3, math.nan, math.nan, 0.001, seeds=(42,), mde=math.nan))
