import math

import pytest

from edgerlhf.rewards.metrics import agreement_with_labels, mean_std, pairwise_accuracy, spearman


def test_pairwise_accuracy_counts_ties_as_wrong():
    assert pairwise_accuracy([1, 2, 3, 0], [0, 2, 1, 5]) == 0.5
    assert math.isnan(pairwise_accuracy([], []))


def test_agreement_with_labels_skips_label_ties():
    # pair 2 has equal gold labels and is skipped; of the other 3, pairs 1 and 4 agree
    assert agreement_with_labels([1, 0, 0, 2], [0, 1, 1, 1], [0.9, 0.2, 0.4, 0.5],
                                 [0.1, 0.2, 0.1, 0.4]) == pytest.approx(2 / 3)


def test_spearman_hand_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks a=[1,2,3], b=[1,3,2]: d^2 = 0+1+1 = 2 -> 1 - 6*2/(3*8) = 0.5
    assert spearman([1, 2, 3], [5, 9, 7]) == pytest.approx(0.5)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_mean_std_sample():
    m, s = mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and s == pytest.approx(math.sqrt(5 / 3))


def test_agreement_with_reference_hand_values():
    from edgerlhf.rewards.metrics import agreement_with_reference

    ref_c, ref_r = [1.0, 2.0], [0.0, 3.0]
    # identical scores: no deviation, no flips
    same = agreement_with_reference(ref_c, ref_r, ref_c, ref_r)
    assert same["flip_rate"] == 0 and same["mean_abs_dev_over_std"] == 0 and same["spearman_vs_ref"] == pytest.approx(1)
    # reference scores [1, 2, 0, 3]: mean 1.5, sample std sqrt(5/3); new scores shift pair 2's chosen by +2 (a flip)
    out = agreement_with_reference(ref_c, ref_r, [1.0, 4.0], [0.0, 3.0])
    std = math.sqrt(5 / 3)
    assert out["flip_rate"] == 0.5 and out["accuracy_vs_ref"] == 0.5
    assert out["max_abs_dev_over_std"] == pytest.approx(2 / std)
    assert out["mean_abs_dev_over_std"] == pytest.approx((2 / 4) / std)


def test_distinct_n_and_repetition_rate_by_hand():
    from edgerlhf.rewards.metrics import distinct_n, repetition_rate

    texts = ["a b a b", "a b c"]
    # bigrams: (a b) (b a) (a b) | (a b) (b c) -> 3 distinct of 5
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    # trigrams of "a b a b": (a b a) (b a b) no repeat; "a b a b a b" repeats
    assert repetition_rate(["a b a b", "a b a b a b", "x"], 3) == pytest.approx(1 / 3)
    assert math.isnan(distinct_n(["one"], 2))


def test_gain_kept_by_hand():
    from edgerlhf.rewards.metrics import gain_kept

    base, policy = [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 1.0, 0.0]  # the policy gains 4 / 4 = 1.0 on average
    f = [0.5, 1.0, 0.5, 0.0]  # the file keeps half on every prompt
    share, lo, hi = gain_kept(f, policy, base)
    assert share == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)  # no spread
    share, lo, hi = gain_kept([1.0, 1.0, 1.0, 0.0], policy, base)  # 3 / 4 of the gain, unevenly: an interval
    assert share == pytest.approx(0.75) and lo < 0.75 < hi
    assert all(math.isnan(x) for x in gain_kept([1.0], [0.0], [0.0]))  # no gain to keep
    with pytest.raises(ValueError, match="one score per prompt"):
        gain_kept([1.0], [1.0, 2.0], [0.0])


def test_delta_kept_by_hand():
    """A 4-bit SFT file that already scores +0.5 on every prompt, and the file with the RL delta +1.0: the file's
    gain over the SFT policy is 1.0 of the policy's 1.0 (100% 'kept'), but only 0.5 of it is the delta's."""
    from edgerlhf.rewards.metrics import delta_kept, gain_kept

    base, policy = [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]
    qbase, f = [0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]
    assert gain_kept(f, policy, base)[0] == pytest.approx(1.0)
    share, lo, hi = delta_kept(f, qbase, policy, base)
    assert share == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    assert delta_kept([2.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0])[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one score per prompt"):
        delta_kept([1.0], [1.0], [1.0, 2.0], [0.0])
