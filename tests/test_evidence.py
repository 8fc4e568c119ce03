"""Paired effects over seeds: the interval is Student's t, seeds are matched, bad input is refused."""

import math

import pytest

from eqreg_hf.tasks.evidence import mean_interval, paired_effect


def test_two_seeds_use_the_t_quantile_with_one_degree_of_freedom():
    e = mean_interval([1.0, 3.0])  # mean 2, sd sqrt(2), se 1: half-width t(0.975, 1) = 12.706
    assert e.mean == 2.0 and e.n == 2
    assert e.high - e.mean == pytest.approx(12.7062, abs=1e-3)
    assert e.verdict() == "ties"


def test_pairs_by_seed_not_by_position():
    treatment = {0: 10.0, 1: 11.0, 2: 12.0, 7: 99.0}  # seed 7 has no control: left out
    control = {2: 11.5, 1: 10.5, 0: 9.5}
    e = paired_effect(treatment, control)
    assert e.n == 3 and e.mean == pytest.approx(0.5) and e.low == pytest.approx(0.5)
    assert e.verdict() == "helps"
    assert paired_effect(control, treatment).verdict() == "hurts"


def test_one_seed_has_no_interval_and_says_so():
    e = paired_effect({0: 1.0}, {0: 0.5})
    assert e.n == 1 and math.isnan(e.low) and e.verdict() == "n < 2" and "1 seed" in e.format()


def test_no_common_seed_and_no_finite_value_are_refused():
    with pytest.raises(ValueError, match=r"no seed in common \(treatment \[0\], control \[1\]\)"):
        paired_effect({0: 1.0}, {1: 1.0})
    with pytest.raises(ValueError, match="no finite values"):
        mean_interval([math.nan, None])
