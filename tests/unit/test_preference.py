"""The preference model and its loss against numbers worked out by hand (paper, section 2.2.3)."""

import math

import numpy as np
import pytest
import torch

from rlhp_core.reward.bradley_terry import bt_prob, preference_log_probs, preference_loss_per_item
from rlhp_core.segments import ANSWER_MU

torch.set_num_threads(1)

LEFT, RIGHT, EQUAL = (1.0, 0.0), (0.0, 1.0), (0.5, 0.5)


def preference_loss(rl, rr, mu, noise=0.1):
    return preference_loss_per_item(rl, rr, mu, noise).mean()


def loss1(rl, rr, mu, noise=0.1, dtype=torch.float64):
    return preference_loss_per_item(
        torch.tensor([rl], dtype=dtype), torch.tensor([rr], dtype=dtype), torch.tensor([mu], dtype=dtype), noise
    )[0].item()


def test_left_preferred_with_random_answer_term():
    # R_l = 1, R_r = 0: P = sigmoid(1) = 1 / (1 + e^-1) = 0.7310585786
    # P' = 0.9 * 0.7310585786 + 0.05 = 0.6579527208 + 0.05 = 0.7079527208
    # loss = -ln(0.7079527208) = 0.3453779661
    assert loss1(1.0, 0.0, LEFT) == pytest.approx(0.3453779661, abs=1e-9)
    # Right preferred instead: P'_r = 0.9 * (1 - 0.7310585786) + 0.05 = 0.2920472792
    # loss = -ln(0.2920472792) = 1.2308395746
    assert loss1(1.0, 0.0, RIGHT) == pytest.approx(1.2308395746, abs=1e-9)


def test_noise_zero_is_plain_bradley_terry():
    # -ln(sigmoid(1)) = ln(1 + e^-1) = 0.3132616875
    assert loss1(1.0, 0.0, LEFT, noise=0.0) == pytest.approx(0.3132616875, abs=1e-9)
    assert bt_prob(1.0, 0.0) == pytest.approx(0.7310585786, abs=1e-9)


def test_bt_prob_matches_the_loss_and_takes_a_teachers_beta():
    # the numpy probability and the loss's log-space one are the same function
    d = np.array([-800.0, -30.0, -1.0, 0.0, 0.5, 2.0, 30.0, 800.0])
    log_pl, log_pr = preference_log_probs(torch.from_numpy(d), torch.zeros(len(d), dtype=torch.float64), noise=0.0)
    np.testing.assert_allclose(bt_prob(d, 0.0), log_pl.exp().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bt_prob(0.0, d), log_pr.exp().numpy(), rtol=1e-12, atol=1e-15)
    # a teacher's rationality beta: sigmoid(beta * (R1 - R2)); 0 a coin, inf the higher return (a tie 1/2)
    assert bt_prob(3.0, 2.0, beta=2.0) == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-12)
    assert bt_prob(3.0, 2.0, beta=0.0) == 0.5
    np.testing.assert_array_equal(bt_prob(np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 2.5]), math.inf), [1.0, 0.5, 0.0])


def test_equal_label():
    # Equal returns: P = 0.5, P' = 0.9 * 0.5 + 0.05 = 0.5; loss = -(0.5 ln 0.5 + 0.5 ln 0.5) = ln 2
    assert loss1(3.0, 3.0, EQUAL) == pytest.approx(math.log(2), abs=1e-12)
    # R_l = 2, R_r = 0: P = sigmoid(2) = 0.8807970780
    # P'_l = 0.9 * 0.8807970780 + 0.05 = 0.8427173702; P'_r = 0.9 * 0.1192029220 + 0.05 = 0.1572826298
    # loss = -0.5 * (ln 0.8427173702 + ln 0.1572826298) = -0.5 * (-0.1711203 + -1.8497140) = 1.0104172730
    assert loss1(2.0, 0.0, EQUAL) == pytest.approx(1.0104172730, abs=1e-9)


def test_only_the_return_gap_matters():
    # Bradley-Terry on sums: adding a constant to both returns changes nothing.
    assert loss1(101.0, 100.0, LEFT) == pytest.approx(loss1(1.0, 0.0, LEFT), abs=1e-9)


def test_random_answer_term_bounds_the_loss_at_huge_gaps():
    # R_l - R_r = 1e4, label says right: P'_r -> 0.9 * 0 + 0.05, loss -> -ln 0.05 = 2.9957322736
    # label says left: P'_l -> 0.9 * 1 + 0.05 = 0.95, loss -> -ln 0.95 = 0.0512932944
    for dtype in (torch.float32, torch.float64):
        assert loss1(1e4, 0.0, RIGHT, dtype=dtype) == pytest.approx(2.9957322736, abs=1e-5)
        assert loss1(1e4, 0.0, LEFT, dtype=dtype) == pytest.approx(0.0512932944, abs=1e-6)
        assert loss1(0.0, 1e4, RIGHT, dtype=dtype) == pytest.approx(0.0512932944, abs=1e-6)
    # Without the term the loss is the whole gap (log-sum-exp, no overflow): ln(1 + e^1e4) ~ 1e4.
    assert loss1(1e4, 0.0, RIGHT, noise=0.0, dtype=torch.float32) == pytest.approx(1e4, rel=1e-6)


def test_no_nan_in_gradients_at_huge_gaps():
    for dtype in (torch.float32, torch.float64):
        rl = torch.tensor([1e4, -1e4, 0.0, 5e3], dtype=dtype, requires_grad=True)
        rr = torch.tensor([0.0, 0.0, 1e4, -5e3], dtype=dtype, requires_grad=True)
        mu = torch.tensor([RIGHT, LEFT, EQUAL, LEFT], dtype=dtype)
        for noise in (0.0, 0.1):
            loss = preference_loss(rl, rr, mu, noise)
            (g_l, g_r) = torch.autograd.grad(loss, (rl, rr))
            assert torch.isfinite(loss) and torch.isfinite(g_l).all() and torch.isfinite(g_r).all()


def test_gradient_by_hand():
    # d = R_l - R_r = 0, label left, noise 0.1: P' = 0.5, dP'/dd = 0.9 * sigmoid'(0) = 0.9 * 0.25 = 0.225
    # dloss/dR_l = -(1 / P') * dP'/dd = -0.225 / 0.5 = -0.45; dloss/dR_r = +0.45
    rl = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    rr = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    preference_loss(rl, rr, torch.tensor([LEFT], dtype=torch.float64)).backward()
    assert rl.grad.item() == pytest.approx(-0.45, abs=1e-12)
    assert rr.grad.item() == pytest.approx(0.45, abs=1e-12)


def test_mean_of_per_item_and_batch_shapes():
    rl = torch.tensor([[1.0, 0.0], [2.0, 3.0]], dtype=torch.float64)
    rr = torch.zeros(2, 2, dtype=torch.float64)
    mu = torch.tensor([[LEFT, RIGHT], [EQUAL, LEFT]], dtype=torch.float64)
    per = preference_loss_per_item(rl, rr, mu)
    assert per.shape == (2, 2)
    assert per[0, 0].item() == pytest.approx(0.3453779661, abs=1e-9)
    assert per[1, 0].item() == pytest.approx(1.0104172730, abs=1e-9)
    assert preference_loss(rl, rr, mu).item() == pytest.approx(per.mean().item())
    # numpy inputs work too
    assert preference_loss(np.array([1.0]), np.array([0.0]), np.array([LEFT])).item() == pytest.approx(0.3453779661)


def test_answers_as_targets():
    # 'incomparable' has no target: it is stored, never trained on (PreferenceDataset.add skips it)
    assert ANSWER_MU == {"left": LEFT, "right": RIGHT, "equal": EQUAL}
    rl, rr = torch.tensor([1.0, 1.0, 1.0]), torch.zeros(3)
    loss = preference_loss(rl, rr, torch.tensor([ANSWER_MU[a] for a in ("left", "right", "equal")]))
    # (0.3453779661 + 1.2308395746 + ln(1/P'_l)/2 + ln(1/P'_r)/2) / 3 with P'_l = 0.7079527208, P'_r = 0.2920472792
    expected = (0.3453779661 + 1.2308395746 + 0.5 * (0.3453779661 + 1.2308395746)) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="last dimension of 2"):
        preference_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="shapes must agree"):
        preference_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="noise"):
        preference_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1, 2), noise=1.0)
