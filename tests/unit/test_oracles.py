"""The scripted teacher family: observable rates match the parameters, thresholds act exactly where
documented, labels are reproducible and stored like a person's, bad parameters are refused.

Statistical checks use a tolerance of 4 binomial standard deviations computed here from the
parameters (not from what the code produced): a correct teacher fails one such check with
probability about 6e-5, and every draw is seeded, so the suite is deterministic anyway.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from oracles.agreement import agreement, main as agreement_main
from oracles.scripted import ScriptedLabeler, make_labeler
from oracles.teacher import (
    KNOBS, PRESETS, TIE_ANSWERS, Teacher, TeacherParams, env_defaults, format_spec, myopic_weights, parse_teacher,
    teacher_for_env,
)
from rlhp_core.label_store import LabelStore
from rlhp_core.labeler import Labeler
from rlhp_core.segments import ANSWERS, Query, Segment

H = 25


def seg(rewards, ends=None) -> Segment:
    r = np.asarray(rewards, dtype=np.float32)
    return Segment(
        obs=np.zeros((len(r), 2), np.uint8),
        actions=np.zeros(len(r), np.int64),
        true_rewards=r,
        episode_ends=np.zeros(len(r), bool) if ends is None else np.asarray(ends, bool),
    )


def const_seg(total: float, length: int = H) -> Segment:
    """A segment whose (undiscounted) return is ``total``, all of it on the last step (weight 1 for any gamma)."""
    r = np.zeros(length, np.float32)
    r[-1] = total
    return seg(r)


def pair_queries(r_left, r_right, prefix="q") -> list[Query]:
    return [Query(f"{prefix}{i}", const_seg(a), const_seg(b)) for i, (a, b) in enumerate(zip(r_left, r_right))]


def within_binomial(k: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1e-9


def teacher(rng_seed=0, **knobs) -> Teacher:
    return Teacher(TeacherParams(**knobs), np.random.default_rng(rng_seed))


# --- perceived returns ------------------------------------------------------------------------
def test_myopic_weights_and_episode_end_penalty_are_weighted_alike():
    gamma, penalty = 0.9, 2.0
    t = teacher(gamma=gamma, episode_end_penalty=penalty)
    for step in range(H):
        onehot = np.zeros(H)
        onehot[step] = 1.0
        assert t.segment_returns(seg(onehot)) == pytest.approx(gamma ** (H - 1 - step), rel=1e-12)
        expected = -penalty * gamma ** (H - 1 - step)
        assert t.segment_returns(seg(np.zeros(H), onehot)) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(myopic_weights(4, 0.5), [0.125, 0.25, 0.5, 1.0])
    rewards, ends = np.arange(H, dtype=float), np.arange(H) % 7 == 3
    expected = sum(gamma ** (H - 1 - i) * (rewards[i] - penalty * ends[i]) for i in range(H))
    assert t.segment_returns(seg(rewards, ends)) == pytest.approx(expected, rel=1e-9)
    # a batch of segments (two lengths) gives the same numbers as one at a time
    segs = [seg(rewards, ends), const_seg(3.0), const_seg(-1.0, length=10)]
    np.testing.assert_allclose(t.segment_returns(segs), [t.segment_returns(s) for s in segs])


def test_not_myopic_is_the_plain_sum():
    rewards = np.random.default_rng(1).normal(size=H)
    expected = float(np.sum(rewards.astype(np.float32).astype(np.float64)))
    assert teacher().segment_returns(seg(rewards)) == pytest.approx(expected, rel=1e-12)


def test_episode_end_penalty_breaks_constant_reward_ties():
    """CartPole: +1 every step; only the penalty tells a segment with a fall from one without."""
    t = teacher_for_env("rational", np.random.default_rng(0), env_id="CartPole-v1")
    assert t.params.episode_end_penalty == env_defaults("CartPole-v1").episode_end_penalty > 0
    ends = np.zeros(H, bool)
    ends[10] = True
    q = Query("q", seg(np.ones(H)), seg(np.ones(H), ends))
    assert t.answer(q) == "left"
    assert teacher().answer(q) == "equal"  # no penalty: every pair ties


def test_time_limit_ends_are_not_penalised():
    """A time limit (truncation) is no fault of the agent's: only terminations cost the penalty.
    Segments stored before the field existed (truncations None) count every end."""
    t = teacher_for_env("rational", np.random.default_rng(0), env_id="CartPole-v1")
    ends = np.zeros(H, bool)
    ends[10] = True
    timed_out = Segment(obs=np.zeros((H, 2), np.uint8), actions=np.zeros(H, np.int64), true_rewards=np.ones(H, np.float32),
                        episode_ends=ends, truncations=ends.copy())
    assert not timed_out.terminations.any() and seg(np.ones(H), ends).terminations[10]
    assert t.answer(Query("q", seg(np.ones(H)), timed_out)) == "equal"
    assert t.segment_returns([timed_out, seg(np.ones(H), ends)]).tolist() == [
        H, H - t.params.episode_end_penalty]
    back = Segment.from_bytes(timed_out.to_bytes())
    np.testing.assert_array_equal(back.truncations, ends)
    legacy = Segment.from_bytes(seg(np.ones(H), ends).to_bytes())
    assert legacy.truncations is None and legacy.terminations[10]


# --- preset rates ---------------------------------------------------------------------------
def test_rational_prefers_higher_return_and_answers_ties_equal():
    t = parse_teacher("rational", np.random.default_rng(0))
    qs = pair_queries([1.0, -2.0, 0.0, 3.0], [0.5, 1.0, 0.0, 3.0])
    assert t.answer_batch(qs) == ["left", "right", "equal", "equal"]


def test_rational_without_equal_breaks_ties_with_a_fair_coin():
    n = 4000
    t = parse_teacher("equal_threshold=-inf", np.random.default_rng(0))
    answers = t.answer_batch(pair_queries([1.0] * n, [1.0] * n))
    assert set(answers) == {"left", "right"}
    assert within_binomial(answers.count("left"), n, 0.5)


@pytest.mark.parametrize("eps", [0.1, 0.35])
def test_mistake_rate_matches_eps(eps):
    n = 10000
    t = parse_teacher(f"mistake:eps_mistake={eps}", np.random.default_rng(1))
    answers = t.answer_batch(pair_queries([1.0] * n, [0.0] * n))
    assert within_binomial(answers.count("right"), n, eps)
    assert answers.count("left") + answers.count("right") == n


def test_mistake_preset_is_eps_0_1():
    assert parse_teacher("mistake", np.random.default_rng(0)).params.eps_mistake == 0.1


@pytest.mark.parametrize("spec,beta", [("stoc", 1.0), ("stoc:beta=2.5", 2.5), ("beta=0", 0.0)])
def test_boltzmann_probabilities_match_softmax(spec, beta):
    t = parse_teacher(spec, np.random.default_rng(2))
    assert t.params.beta == beta
    n = 3000
    for r1, r2 in [(0.0, 3.0), (1.0, 2.0), (0.25, 0.0), (2.0, 1.5), (2.0, 0.0)]:
        answers = t.answer_batch(pair_queries([r1] * n, [r2] * n))
        e1, e2 = math.exp(beta * r1), math.exp(beta * r2)
        p_left = e1 / (e1 + e2)  # softmax(beta * [R1, R2])[0]
        assert within_binomial(answers.count("left"), n, p_left), (r1, r2, answers.count("left") / n, p_left)


def test_answer_probabilities_are_softmax_with_mistakes():
    t = parse_teacher("stoc:eps_mistake=0.2", np.random.default_rng(0))
    probs = t.answer_probabilities(pair_queries([1.0, 0.0], [0.0, 0.0]))
    p = 1 / (1 + math.exp(-1.0))
    np.testing.assert_allclose(probs[0], [0.8 * p + 0.2 * (1 - p), 0.8 * (1 - p) + 0.2 * p, 0, 0])
    np.testing.assert_allclose(probs[1], [0, 0, 1, 0])  # tie -> equal, never flipped


def test_skip_exactly_at_threshold():
    t = teacher(skip_threshold=2.5)
    below = np.nextafter(np.float32(2.5), np.float32(0))
    qs = pair_queries([2.5, below, -3.0, 2.5], [0.0, 0.0, below, 7.0])
    assert t.answer_batch(qs) == ["left", "incomparable", "incomparable", "right"]


def test_skip_preset_threshold_is_eps_times_typical_segment_return():
    lab = make_labeler("skip", seed=0, env_id="CartPole-v1", segment_length=H)
    t = lab.teacher
    expected = 0.1 * 1.0 * H  # skip_eps * reward_per_step * sum of weights (gamma = 1)
    assert t.params.skip_threshold == pytest.approx(expected, rel=1e-12)
    thr = np.float32(t.params.skip_threshold)
    assert float(thr) == t.params.skip_threshold  # 2.5 is exact, so the boundary below is exact too
    qs = pair_queries([thr, np.nextafter(thr, np.float32(0))], [0.0, 0.0])
    assert t.answer_batch(qs) == ["left", "incomparable"]
    # myopic: the typical return shrinks with the same weights the teacher applies
    t9 = make_labeler("skip:gamma=0.5", seed=0, env_id="CartPole-v1", segment_length=4).teacher
    assert t9.params.skip_threshold == pytest.approx(0.1 * (1 + 0.5 + 0.25 + 0.125))


def test_equal_exactly_at_threshold_and_never_flipped():
    t = teacher(equal_threshold=0.5, eps_mistake=1.0)
    above = float(np.nextafter(np.float32(0.5), np.float32(1)))
    qs = pair_queries([1.0, 1.0, 0.0, 1.0], [0.5, 1.0 - above, 0.5, 2.0])
    # |d| = 0.5 is equal, |d| just above 0.5 is not; eps_mistake=1 swaps every left/right answer, no equal one
    assert t.answer_batch(qs) == ["equal", "right", "equal", "left"]


def test_equal_preset_uses_ten_percent_of_typical_segment_return():
    t = make_labeler("equal", seed=0, env_id="ALE/Enduro-v5", segment_length=H).teacher
    assert t.params.equal_threshold == pytest.approx(0.1 * env_defaults("ALE/Enduro-v5").reward_per_step * H)
    assert t.record["equal_eps"] == 0.1 and t.record["reward_per_step"] == 0.06


def test_skip_wins_over_equal():
    t = teacher(skip_threshold=1.0, equal_threshold=10.0)
    assert t.answer_batch(pair_queries([0.0, 2.0], [0.5, 0.5])) == ["incomparable", "equal"]


def test_myopic_preset_prefers_what_happened_last():
    t = parse_teacher("myopic", np.random.default_rng(0))
    assert t.params.gamma == 0.9
    early, late = np.zeros(H), np.zeros(H)
    early[0], late[-1] = 2.0, 1.0  # early has the larger plain sum
    assert t.answer(Query("q", seg(early), seg(late))) == "right"
    assert teacher().answer(Query("q", seg(early), seg(late))) == "left"


def test_large_beta_reproduces_rational():
    rng = np.random.default_rng(3)
    r1, r2 = rng.normal(size=500).round(3), rng.normal(size=500).round(3)
    qs = pair_queries(r1, r2)
    rational = parse_teacher("rational", np.random.default_rng(7)).answer_batch(qs)
    for beta in (1e6, math.inf):
        assert parse_teacher(f"stoc:beta={beta}", np.random.default_rng(7)).answer_batch(qs) == rational
    gaps = [np.abs(parse_teacher(f"beta={b}", np.random.default_rng(0)).answer_probabilities(qs)
                   - parse_teacher("rational", np.random.default_rng(0)).answer_probabilities(qs)).max()
            for b in (1.0, 10.0, 100.0, 1e4)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-6
    assert parse_teacher("stoc:beta=inf", np.random.default_rng(0)).params == TeacherParams()


# --- ties (rule 3, 3a, 3b) -----------------------------------------------------------------------
def prog_seg(total: float, progress: float, length: int = H) -> Segment:
    """A segment with return ``total`` and driving progress ``progress``, both on the last step (weight 1)."""
    r, pr = np.zeros(length, np.float32), np.zeros(length, np.float32)
    r[-1], pr[-1] = total, progress
    return Segment(obs=np.zeros((length, 2), np.uint8), actions=np.zeros(length, np.int64), true_rewards=r,
                   episode_ends=np.zeros(length, bool), progress=pr)


@pytest.mark.parametrize("tie,answers,tie_probs", [
    ("equal", ["equal", "equal", "left", "right"], [0, 0, 1, 0]),
    ("coin", None, [0.5, 0.5, 0, 0]),
    ("skip", ["incomparable", "incomparable", "left", "right"], [0, 0, 0, 1]),
])
def test_tie_answer_equal_coin_skip(tie, answers, tie_probs):
    t = parse_teacher(f"tie={tie}", np.random.default_rng(0))
    assert t.params.tie == TIE_ANSWERS[tie] and t.params.tie_answer == tie
    qs = pair_queries([1.0, 0.0, 2.0, -1.0], [1.0, 0.0, -1.0, 0.5])  # two exact ties, then two decided pairs
    probs = t.answer_probabilities(qs)
    np.testing.assert_array_equal(probs[:2], [tie_probs, tie_probs])
    np.testing.assert_array_equal(probs[2:], [[1, 0, 0, 0], [0, 1, 0, 0]])  # the tie knob never touches a decided pair
    got = t.answer_batch(qs)
    if answers is None:
        assert set(got[:2]) <= {"left", "right"} and got[2:] == ["left", "right"]
    else:
        assert got == answers


def test_coin_is_fair_and_is_what_equal_threshold_minus_inf_meant():
    n = 4000
    qs = pair_queries([1.0] * n, [1.0] * n)
    coin = parse_teacher("tie=coin", np.random.default_rng(0))
    answers = coin.answer_batch(qs)
    assert within_binomial(answers.count("left"), n, 0.5) and answers.count("right") == n - answers.count("left")
    old = parse_teacher("equal_threshold=-inf", np.random.default_rng(0))
    assert old.params == coin.params == TeacherParams(tie="coin") == TeacherParams(tie=1)
    assert old.params.equal_threshold == 0.0 and old.record["tie"] == "coin"  # stored in the one canonical form
    assert old.answer_batch(qs) == answers
    # with exact ties only, a Boltzmann teacher with tie=coin is plain softmax everywhere (sigmoid(0) = 1/2)
    d = np.linspace(-2, 2, 41).astype(np.float32).astype(np.float64)  # segments store float32 rewards
    probs = parse_teacher("stoc:tie=coin", np.random.default_rng(0)).answer_probabilities(pair_queries(d, 0 * d))
    np.testing.assert_allclose(probs[:, 0], 1 / (1 + np.exp(-d)), rtol=1e-12)
    assert probs[20].tolist() == [0.5, 0.5, 0.0, 0.0]


def test_tie_band_rule_order_skip_then_tie_then_prefer_then_mistake():
    """skip_threshold wins over the tie answer; inside the equal_threshold band the tie answer alone decides
    (coin: 1/2 even where beta leans); outside it, softmax then mistakes; equal/incomparable are never swapped."""
    qs = pair_queries([0.0, 2.0, 2.0, 1.0], [0.5, 1.6, 1.0, 1.0])  # below skip; in the band; outside; exact tie
    p = 1 / (1 + math.exp(-1.0))  # beta = 1, R1 - R2 = 1
    outside = [0.8 * p + 0.2 * (1 - p), 0.8 * (1 - p) + 0.2 * p, 0, 0]
    expect = {"equal": [0, 0, 1, 0], "coin": [0.5, 0.5, 0, 0], "skip": [0, 0, 0, 1]}
    for tie, in_band in expect.items():
        t = teacher(beta=1.0, eps_mistake=0.2, skip_threshold=1.0, equal_threshold=0.5, tie=tie)
        np.testing.assert_allclose(t.answer_probabilities(qs), [[0, 0, 0, 1], in_band, outside, in_band], atol=1e-15)


def test_a_tie_broken_by_progress_is_not_a_tie():
    """Rule 3a before 3b: progress decides a reward tie when it differs by more than progress_margin; only the
    ties left (same progress, or within the margin) get the tie answer. A reward difference beats progress."""
    qs = [Query("reward", prog_seg(1.0, 0.0), prog_seg(0.0, 9.0)),
          Query("progress", prog_seg(0.0, 1.0), prog_seg(0.0, 2.0)),
          Query("same-progress", prog_seg(0.0, 3.0), prog_seg(0.0, 3.0)),
          Query("within-margin", prog_seg(0.0, 3.0), prog_seg(0.0, 3.5))]
    expect = {"equal": [0, 0, 1, 0], "coin": [0.5, 0.5, 0, 0], "skip": [0, 0, 0, 1]}
    for tie, left_over in expect.items():
        t = parse_teacher(f"progress:progress_margin=0.5,tie={tie}", np.random.default_rng(0))
        np.testing.assert_array_equal(t.answer_probabilities(qs),
                                      [[1, 0, 0, 0], [0, 1, 0, 0], left_over, left_over])
    skip = parse_teacher("progress:tie=skip", np.random.default_rng(0))  # margin 0: 3 vs 3.5 is decided
    assert skip.answer_batch(qs) == ["left", "right", "incomparable", "right"]
    # a skipped tie does not shift the labels of the other queries (two uniforms per query, always)
    equal = parse_teacher("progress:tie=equal,eps_mistake=0.3", np.random.default_rng(4)).answer_batch(qs * 50)
    skipped = parse_teacher("progress:tie=skip,eps_mistake=0.3", np.random.default_rng(4)).answer_batch(qs * 50)
    assert [a for a in equal if a != "equal"] == [a for a in skipped if a != "incomparable"]


def test_tie_knob_round_trips_through_specs_and_records():
    for tie in TIE_ANSWERS:
        t = parse_teacher(f"progress:tie={tie.upper()}", np.random.default_rng(0))
        assert t.name == f"progress:tie={tie}" == format_spec("progress", tie=tie)
        assert format_spec("progress", tie=TIE_ANSWERS[tie]) == t.name
        assert parse_teacher(t.name, np.random.default_rng(0)).params == t.params
        record = json.loads(json.dumps(t.record))  # what the label store keeps
        assert record["tie"] == tie and record["progress_margin"] == 0.0
        assert TeacherParams.from_record(record) == t.params
    assert parse_teacher("rational", np.random.default_rng(0)).params.tie_answer == "equal"  # the default
    # records written before the knob existed: no tie key (equal), or equal_threshold "-inf" (a coin)
    legacy = {k: v for k, v in TeacherParams().to_record().items() if k != "tie"}
    assert TeacherParams.from_record(legacy) == TeacherParams()
    assert TeacherParams.from_record({**legacy, "equal_threshold": "-inf"}).tie_answer == "coin"
    with pytest.raises(ValueError, match="tie must be one of equal, coin, skip"):
        format_spec(tie=5)


# --- reproducibility ------------------------------------------------------------------------
def test_same_seed_same_labels_and_batching_does_not_matter():
    qs = pair_queries(np.linspace(-1, 1, 200), np.linspace(1, -1, 200) * 0.3)
    spec = "stoc:eps_mistake=0.2,gamma=0.9"
    a = parse_teacher(spec, np.random.default_rng(5)).answer_batch(qs)
    b = parse_teacher(spec, np.random.default_rng(5)).answer_batch(qs)
    one = parse_teacher(spec, np.random.default_rng(5))
    c = [one.answer(q) for q in qs]
    d = parse_teacher(spec, np.random.default_rng(6)).answer_batch(qs)
    assert a == b == c
    assert a != d


def test_generator_state_resumes_the_label_stream():
    qs = pair_queries([0.3] * 50, [0.0] * 50)
    t = parse_teacher("stoc", np.random.default_rng(0))
    t.answer_batch(qs)
    state = t.get_state()
    expected = t.answer_batch(qs)
    resumed = parse_teacher("stoc", np.random.default_rng(123))
    resumed.set_state(state)
    assert resumed.answer_batch(qs) == expected


def test_teacher_requires_an_explicit_generator():
    with pytest.raises(TypeError, match="np.random.Generator"):
        Teacher(TeacherParams(), 0)


# --- invalid parameters -------------------------------------------------------------------------
@pytest.mark.parametrize("knobs,match", [
    ({"beta": -1.0}, r"beta must be in \[0, inf\]"),
    ({"beta": math.nan}, r"beta must be in \[0, inf\]"),
    ({"eps_mistake": 1.5}, r"eps_mistake must be in \[0, 1\]"),
    ({"eps_mistake": -0.1}, r"eps_mistake must be in \[0, 1\]"),
    ({"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
    ({"gamma": 1.1}, r"gamma must be in \(0, 1\]"),
    ({"equal_threshold": -0.5}, r"equal_threshold must be in \[0, inf\)"),
    ({"skip_threshold": math.inf}, r"skip_threshold must be in \[-inf, inf\)"),
    ({"episode_end_penalty": math.inf}, r"episode_end_penalty must be a finite number"),
    ({"beta": "high"}, r"beta must be a number"),
    ({"tie": 3.0}, r"tie must be one of equal, coin, skip \(in code also their numbers 0, 1, 2\), got 3$"),
    ({"tie": "sometimes"}, r"tie must be one of equal, coin, skip .*got 'sometimes'"),
    ({"tie": math.nan}, r"tie must be one of equal, coin, skip .*got nan"),
    ({"equal_threshold": -math.inf, "tie": "skip"}, r"equal_threshold=-inf .*contradicts tie=skip; give tie=skip alone"),
])
def test_invalid_params_are_refused(knobs, match):
    with pytest.raises(ValueError, match=match):
        TeacherParams(**knobs)


@pytest.mark.parametrize("spec,match", [
    ("stoc:beta=-1", r"beta must be in \[0, inf\]"),
    ("mistake:eps_mistake=2", r"eps_mistake must be in \[0, 1\]"),
    ("myopic:gamma=0", r"gamma must be in \(0, 1\]"),
    ("clever", r"unknown teacher preset 'clever'.*presets: rational, stoc, mistake, skip, equal, myopic"),
    ("stoc:betta=2", r"unknown teacher knob\(s\) \['betta'\].*knobs: beta, gamma"),
    ("temperature=3", r"unknown teacher knob\(s\) \['temperature'\]"),
    ("stoc:beta", r"'beta' is not knob=value"),
    ("stoc:beta=abc", r"knob beta: 'abc' is not a number"),
    ("beta=1,beta=2", r"sets knob beta twice"),
    ("skip_eps=0.1,skip_threshold=2", r"sets both skip_eps .* and skip_threshold .*define that threshold once"),
    ("equal:equal_eps=-0.1", r"equal_eps must be in \[0, inf\)"),
    ("", r"empty teacher spec"),
    ("tie=sometimes", r"knob tie: 'sometimes' is not one of equal, coin, skip$"),
    ("progress:tie=2", r"knob tie: '2' is not one of equal, coin, skip$"),  # specs name the answer
    ("equal_threshold=-inf,tie=skip", r"contradicts tie=skip"),
])
def test_invalid_specs_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_teacher(spec, np.random.default_rng(0), reward_per_step=1.0, segment_length=H)


def test_relative_threshold_needs_a_scale():
    with pytest.raises(ValueError, match="skip_eps .* relative to the typical reward per step.*reward_per_step="):
        parse_teacher("skip", np.random.default_rng(0))
    with pytest.raises(ValueError, match="reward_per_step="):
        make_labeler("equal", seed=0, env_id="ALE/Breakout-v5")  # Atari scales differ per game
    lab = make_labeler("equal", seed=0, env_id="ALE/Breakout-v5", reward_per_step=0.5)
    assert lab.teacher.params.equal_threshold == pytest.approx(0.1 * 0.5 * H)


def test_thresholds_assume_one_segment_length():
    t = make_labeler("skip", seed=0, env_id="CartPole-v1", segment_length=H).teacher
    with pytest.raises(ValueError, match="derived for segments of 25 steps"):
        t.answer(Query("q", const_seg(1.0, 10), const_seg(0.0, 10)))


# --- specs ------------------------------------------------------------------------------------
def test_specs_layer_defaults_preset_and_knobs():
    t = parse_teacher("mistake:eps_mistake=0.2,gamma=0.9", np.random.default_rng(0), episode_end_penalty=3.0)
    assert (t.params.eps_mistake, t.params.gamma, t.params.episode_end_penalty) == (0.2, 0.9, 3.0)
    assert t.name == "mistake:gamma=0.9,eps_mistake=0.2"
    assert parse_teacher(t.name, np.random.default_rng(0)).params == TeacherParams(gamma=0.9, eps_mistake=0.2)
    assert parse_teacher("beta=1,gamma=0.9", np.random.default_rng(0)).params == TeacherParams(beta=1.0, gamma=0.9)
    # an absolute threshold in the spec replaces the preset's relative one
    assert parse_teacher("skip:skip_threshold=4", np.random.default_rng(0)).params.skip_threshold == 4.0
    assert format_spec("stoc", beta=2.0) == "stoc:beta=2" and format_spec(gamma=0.9) == "gamma=0.9"
    assert format_spec() == "rational"
    odd = parse_teacher("stoc:beta=0.123456789012,gamma=1e-3", np.random.default_rng(0))
    assert parse_teacher(odd.name, np.random.default_rng(0)).params == odd.params  # the name is a faithful spec
    for name, knobs in PRESETS.items():
        t = parse_teacher(name, np.random.default_rng(0), reward_per_step=1.0, segment_length=H)
        assert t.name == name
        assert set(knobs) <= set(t.record)


# --- the labeler and the store ----------------------------------------------------------------
def test_scripted_labeler_stores_every_answer_with_full_params(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite", env_id="ALE/Enduro-v5", obs_shape=(2,))
    lab = make_labeler("stoc:gamma=0.9", seed=4, env_id="ALE/Enduro-v5")
    assert isinstance(lab, Labeler) and isinstance(lab, ScriptedLabeler)
    assert lab.name == "oracle:stoc:gamma=0.9" and lab.wants_frames is False
    qs = pair_queries(np.arange(30) % 3, np.arange(30) % 2)
    lab.post(store, qs, env_step=123)
    recs = store.current_answers()
    assert [r.query_id for r in recs] == [q.id for q in qs]
    assert store.pending_query_ids() == [] and store.pending_query_ids(route="oracle") == []
    again = make_labeler("stoc:gamma=0.9", seed=4, env_id="ALE/Enduro-v5")
    assert [r.answer for r in recs] == again.teacher.answer_batch(qs)  # same seed, same labels
    for r in recs:
        assert r.labeler == lab.name
        assert set(KNOBS) <= set(r.labeler_params)
        assert r.labeler_params["seed"] == 4 and r.labeler_params["env_id"] == "ALE/Enduro-v5"
        assert r.labeler_params["beta"] == 1.0 and r.labeler_params["skip_threshold"] == "-inf"
        assert r.labeler_params["episode_end_penalty"] == 10.0  # Enduro's default
        assert TeacherParams.from_record(r.labeler_params) == lab.teacher.params
    assert store.query(qs[0].id, with_frames=True).left.frames is None
    lab.close()


def test_make_labeler_env_defaults_overrides_and_hooks():
    assert make_labeler("rational", seed=0, env_id="ALE/Pong-v5").teacher.params.episode_end_penalty == 0.0
    assert make_labeler("rational", seed=0, env_id="Acrobot-v1").teacher.params.episode_end_penalty == 0.0
    lab = make_labeler("rational", seed=0, env_id="ALE/Enduro-v5", episode_end_penalty=2.0)
    assert lab.teacher.params.episode_end_penalty == 2.0
    lab = make_labeler("rational:episode_end_penalty=5", seed=0, env_id="ALE/Enduro-v5", episode_end_penalty=2.0)
    assert lab.teacher.params.episode_end_penalty == 5.0
    with pytest.raises(ValueError, match="oracles.human.*allowed forms: 'human', 'PRESET\\+human'"):
        make_labeler("human", seed=0, env_id="ALE/Enduro-v5")
    with pytest.raises(ValueError, match="oracles.human"):
        make_labeler("rational+human", seed=0, env_id="ALE/Enduro-v5")
    with pytest.raises(ValueError, match="only 'PRESET\\+human' may combine"):
        make_labeler("stoc+mistake", seed=0, env_id="ALE/Enduro-v5")
    with pytest.raises(ValueError, match="unknown teacher preset 'robot'"):
        make_labeler("robot", seed=0, env_id="ALE/Enduro-v5")


# --- agreement ------------------------------------------------------------------------------
def _labelled_store(tmp_path, spec, n=400, seed=0):
    store = LabelStore(tmp_path / "labels.sqlite", env_id="CartPole-v1", obs_shape=(2,))
    rng = np.random.default_rng(seed)
    left = rng.integers(0, 3, n).astype(float)  # ties (equal) and clear preferences
    right = rng.integers(0, 3, n).astype(float)
    make_labeler(spec, seed=seed, env_id="CartPole-v1").post(store, pair_queries(left, right), env_step=0)
    return store


def test_agreement_per_answer_kind(tmp_path):
    eps = 0.2
    store = _labelled_store(tmp_path, f"mistake:eps_mistake={eps}")
    same = agreement(store, f"mistake:eps_mistake={eps}")
    rational = agreement(store, "rational")
    assert list(rational.index) == [*ANSWERS, "all"]
    assert rational.loc["equal", "agree"] == 1.0 and same.loc["equal", "agree"] == 1.0
    assert rational.loc["incomparable", "n"] == 0
    lr = rational.loc["left", "n"] + rational.loc["right", "n"]
    agreed = round((rational.loc["left", "agree"] * rational.loc["left", "n"]
                    + rational.loc["right", "agree"] * rational.loc["right", "n"]))
    assert within_binomial(lr - agreed, lr, eps)  # the rational teacher disagrees exactly where a mistake was made
    # the mistake teacher against its own labels: 1 - eps on its correct labels, eps on its flipped ones
    assert same.loc["left", "agree"] < 1.0
    given = rational[rational["n"] > 0]
    np.testing.assert_allclose(given[[f"teacher_{a}" for a in ANSWERS]].sum(axis=1), 1.0)
    assert rational.loc["all", "n"] == 400


def test_agreement_cli_and_by_labeler(tmp_path, capsys):
    store = _labelled_store(tmp_path, "rational", n=50)
    path = str(store.path)
    table = agreement(path, "rational", by_labeler=True)
    assert table.loc[("oracle:rational", "all"), "agree"] == 1.0
    assert agreement(path, "rational", labeler="human").loc["all", "n"] == 0
    assert agreement_main([path, "--teacher", "rational", "--csv", str(tmp_path / "a.csv")]) == 0
    out = capsys.readouterr().out
    assert "teacher rational" in out and "agree" in out and (tmp_path / "a.csv").exists()
    with pytest.raises(SystemExit):
        agreement_main([path, "--teacher", "clever"])
    assert "unknown teacher preset 'clever'" in capsys.readouterr().err
