"""One parameterised scripted teacher; the B-Pref family (Lee et al. 2021) are presets of it.

A teacher looks only at the true env reward of each segment (``Segment.true_rewards``) and at
where episodes terminated inside it (``Segment.terminations``: ends that were not a time limit),
and, only to break reward ties (rule 3a), at its driving progress. It never sees observations.

How a teacher answers one query (left segment 1, right segment 2), rule by rule:

1. **Perceived return.** ``R = sum_t gamma**(H-1-t) * (r_t - episode_end_penalty * end_t)``,
   t = 0..H-1, so the last step weighs 1 and earlier steps less (``gamma < 1`` is the myopic
   teacher). The penalty is weighted like the reward of the step where the episode ended.
   Every rule below reads this same R (B-Pref reads the undiscounted sum for skip/equal; we
   keep one notion of "what the teacher perceived").
2. **Skip** -> ``"incomparable"`` when ``max(R1, R2) < skip_threshold`` (strict: a segment
   whose R is exactly the threshold counts as worth comparing). Nothing below applies.
3. **Tie.** The pair is a *reward tie* when ``|R1 - R2| <= equal_threshold`` (inclusive; the
   default 0 makes exact ties only, ``equal_eps`` a band). On Enduro most early pairs are 0-0 ties.
   3a. **Progress** (the ``progress`` preset; off by default). When ``progress_margin`` is finite,
   a reward tie whose segments' driving progress (``Segment.progress``, weighted like the reward:
   Enduro's odometer distance, read from the emulator's RAM) differs by more than
   ``progress_margin`` is decided by progress: the segment that made more is preferred (then
   rule 5). It is no longer a tie, so rule 3b does not see it. This is what the paper says its
   people did on Enduro ("rewarding any progress towards passing cars") and the rational teacher
   cannot: two 25-step clips of a near-random policy almost never differ in cars passed, so it
   answered "equal" to 94-99.8% of Enduro queries. It is a *shaped* teacher: its labels carry
   information the env reward does not, and results with it must say so.
   3b. **Tie answer** (knob ``tie``; in specs ``tie=equal|coin|skip``), for the ties left:
   ``equal`` (default) -> ``"equal"`` (trained as (0.5, 0.5): pulls the ensemble's two
   predictions together; B-Pref's oracle instead answers a tie "left", a bias);
   ``coin`` -> left or right by a fair coin (rule 5 leaves it fair): a pure-noise label, what a
   Boltzmann teacher (beta < inf) answers an exact tie anyway;
   ``skip`` -> ``"incomparable"`` (stored, never trained on: costs a query, teaches nothing).
   ``equal_threshold = -inf`` is accepted as the older spelling of ``tie=coin`` (exact ties to a
   coin) and is stored as ``equal_threshold=0, tie=coin``; with ``tie=skip`` it is refused.
4. **Prefer** (pairs that are not ties). ``P(left) = softmax(beta * [R1, R2])[0] =
   sigmoid(beta * (R1 - R2))``, sampled: the Bradley-Terry model the reward model fits
   (``rlhp_core.reward.bradley_terry.bt_prob``) with rationality ``beta``. ``beta = inf`` is the
   rational teacher: the higher R wins.
5. **Mistake.** A "left"/"right" answer is swapped with probability ``eps_mistake``.
   "equal" and "incomparable" are never swapped (as in B-Pref, where the equal label
   overrides the flipped one).

So skip (rule 2) wins over everything, progress (3a) over the tie answer (3b), and a tie is
answered by 3b alone: with ``tie=coin`` a pair inside an ``equal_threshold`` band gets a fair
coin even when ``beta`` would have leaned one way.

Thresholds: one unit. ``skip_threshold`` and ``equal_threshold`` are in *perceived
segment-return units*: the same units as R above (env reward, summed with the myopic weights
over one segment). Nothing rescales them afterwards. B-Pref's presets state their margins
relative to an average segment instead; specs may do the same with ``skip_eps`` /
``equal_eps``, which :func:`parse_teacher` turns into thresholds exactly once::

    skip_threshold  = skip_eps  *     reward_per_step  * sum_t gamma**(H-1-t)
    equal_threshold = equal_eps * abs(reward_per_step) * sum_t gamma**(H-1-t)

``reward_per_step`` is the env's typical reward per step (table :data:`ENV_DEFAULTS`), so
``reward_per_step * sum_t w_t`` is the perceived return of a typical segment; with gamma = 1 this
is B-Pref's ``mean episode return * H / episode length``. B-Pref's code multiplies the margin by
eps a second time after its first update; that quirk is not reproduced.

Randomness: every teacher draws from the ``np.random.Generator`` it is given, two uniforms per
query (preference, mistake) whether or not they are needed, so the same seed gives the same
labels, a query's label does not depend on which other queries were skipped, and answering a
batch at once gives exactly the labels that answering its queries one by one would.

Specs (command line, sweeps, configs): ``PRESET``, ``PRESET:knob=value,...`` or
``knob=value,...`` (knobs on top of ``rational``); e.g. ``stoc``, ``stoc:beta=2``,
``mistake:eps_mistake=0.2,gamma=0.9``, ``beta=1,gamma=0.9``. ``python -m oracles.teacher``
prints the presets and the per-env defaults.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rlhp_core.reward.bradley_terry import bt_prob
from rlhp_core.segments import ANSWERS, Query, Segment

__all__ = [
    "TeacherParams", "Teacher", "PRESETS", "KNOBS", "RELATIVE_KNOBS", "TIE_ANSWERS", "EnvDefaults", "ENV_DEFAULTS",
    "env_defaults", "parse_teacher", "format_spec", "teacher_for_env", "myopic_weights",
]

_LEFT, _RIGHT, _EQUAL, _INCOMPARABLE = (ANSWERS.index(a) for a in ("left", "right", "equal", "incomparable"))


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------
TIE_ANSWERS: dict[str, float] = {"equal": 0.0, "coin": 1.0, "skip": 2.0}
"""The ``tie`` knob (rule 3b): what a reward tie is answered, by name, and the number that stands for
it in :class:`TeacherParams` (every knob is a number). Specs and records use the names."""

_TIE_CHOICES = (f"{', '.join(TIE_ANSWERS)} "
                f"(in code also their numbers {', '.join(map('{:g}'.format, TIE_ANSWERS.values()))})")


@dataclass(frozen=True)
class TeacherParams:
    """Every knob of the scripted teacher. Defaults are the rational oracle (B-Pref "Oracle")."""

    beta: float = math.inf
    """Boltzmann rationality, in [0, inf]. P(left) = sigmoid(beta * (R1 - R2)); inf = always the higher R; 0 = coin."""
    gamma: float = 1.0
    """Myopia, in (0, 1]. Step t of H is weighted gamma**(H-1-t): the last step 1, earlier ones less. 1 = not myopic."""
    eps_mistake: float = 0.0
    """Probability, in [0, 1], that a left/right answer is swapped after it is chosen."""
    skip_threshold: float = -math.inf
    """Answer "incomparable" when max(R1, R2) < this (perceived segment-return units). -inf = never skip."""
    equal_threshold: float = 0.0
    """A pair is a reward tie when |R1 - R2| <= this (perceived segment-return units), >= 0. 0 = exact ties only.
    -inf (never answer equal) is the older spelling of tie=coin and is stored as 0 with tie=coin."""
    episode_end_penalty: float = 0.0
    """Subtracted from the reward of a step where an episode ended (paper's synthetic-oracle rule). Finite; < 0 is a bonus."""
    progress_margin: float = math.inf
    """Break reward ties by driving progress when the segments' progress differs by more than this (>= 0; rule 3a). inf = off."""
    tie: float = TIE_ANSWERS["equal"]
    """What the ties left after rule 3a are answered (rule 3b): a :data:`TIE_ANSWERS` name ("equal", "coin", "skip") or its number."""

    def __post_init__(self) -> None:
        if isinstance(self.tie, str):
            if self.tie.strip().lower() not in TIE_ANSWERS:
                raise ValueError(f"tie must be one of {_TIE_CHOICES}, got {self.tie!r}")
            object.__setattr__(self, "tie", TIE_ANSWERS[self.tie.strip().lower()])
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        b, g, e = self.beta, self.gamma, self.eps_mistake
        if not b >= 0.0:  # also catches NaN
            raise ValueError(f"beta must be in [0, inf] (inf = rational), got {b}")
        if not 0.0 < g <= 1.0:
            raise ValueError(f"gamma must be in (0, 1] (1 = not myopic), got {g}")
        if not 0.0 <= e <= 1.0:
            raise ValueError(f"eps_mistake must be in [0, 1], got {e}")
        if math.isnan(self.skip_threshold) or self.skip_threshold == math.inf:
            raise ValueError(
                f"skip_threshold must be in [-inf, inf) (segment-return units; -inf = never skip), got {self.skip_threshold}"
            )
        if self.tie not in TIE_ANSWERS.values():
            raise ValueError(f"tie must be one of {_TIE_CHOICES}, got {_fmt(self.tie)}")
        q = self.equal_threshold
        if not (q >= 0.0 or q == -math.inf) or q == math.inf:
            raise ValueError(
                f"equal_threshold must be in [0, inf) (segment-return units) or -inf (never answer equal), got {q}"
            )
        if q == -math.inf:  # the older spelling of tie=coin: one teacher, one set of knobs
            if self.tie == TIE_ANSWERS["skip"]:
                raise ValueError("equal_threshold=-inf (never answer equal, ties get a coin: the older spelling of "
                                 "tie=coin) contradicts tie=skip; give tie=skip alone")
            object.__setattr__(self, "equal_threshold", 0.0)
            object.__setattr__(self, "tie", TIE_ANSWERS["coin"])
        if not self.progress_margin >= 0.0:
            raise ValueError(f"progress_margin must be in [0, inf] (progress units; inf = off), got {self.progress_margin}")
        if not math.isfinite(self.episode_end_penalty):
            raise ValueError(f"episode_end_penalty must be a finite number (reward units), got {self.episode_end_penalty}")

    @property
    def tie_answer(self) -> str:
        """The ``tie`` knob's name: "equal", "coin" or "skip"."""
        return _tie_name(self.tie)

    def to_record(self) -> dict[str, Any]:
        """JSON-safe dict (infinities as the strings "inf"/"-inf", which strict JSON lacks; ``tie`` by name)."""
        return {k: self.tie_answer if k == "tie" else _json_float(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "TeacherParams":
        """Inverse of :meth:`to_record`; keys that are not knobs (spec, seed, ...) are ignored."""
        return cls(**{k: _to_float(k, record[k]) for k in KNOBS if k in record})


KNOBS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TeacherParams))
"""Knobs a spec may set directly (the fields of :class:`TeacherParams`)."""

RELATIVE_KNOBS: dict[str, str] = {"skip_eps": "skip_threshold", "equal_eps": "equal_threshold"}
"""Spec-only knobs (B-Pref's eps, >= 0) and the absolute threshold each one becomes."""

PRESETS: dict[str, dict[str, float]] = {
    "rational": {},
    "stoc": {"beta": 1.0},
    "mistake": {"eps_mistake": 0.1},
    "skip": {"skip_eps": 0.1},
    "equal": {"equal_eps": 0.1},
    "myopic": {"gamma": 0.9},
    "progress": {"progress_margin": 0.0},
}
"""B-Pref's teachers (Lee et al. 2021, their default values) as knob settings on top of rational, and
``progress``: rational on the env reward, reward ties broken by any driving progress (rule 3a; a shaped
teacher, not B-Pref's, for envs with a progress measure such as Enduro). Noise knobs combine with it:
``progress:eps_mistake=0.1``."""


# ---------------------------------------------------------------------------------------------
# Per-env defaults: episode-end penalty and the scale of relative thresholds
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvDefaults:
    pattern: str
    """Regular expression searched in the env id; the first entry of ENV_DEFAULTS that matches applies."""
    episode_end_penalty: float
    """Default penalty per episode end inside a segment (reward units)."""
    reward_per_step: float | None
    """Typical reward per step of steady, competent play: the unit of skip_eps / equal_eps. None: unknown."""
    why: str


_ATARI = r"^ALE/|NoFrameskip-v4$"
ENV_DEFAULTS: tuple[EnvDefaults, ...] = (
    EnvDefaults(r"Pong", 0.0, 0.02,
                "a game ends when either side reaches 21, so an end is not a failure; "
                "about a point per 50 agent steps"),
    EnvDefaults(r"Enduro", 10.0, 0.06,
                "a game ends when a day's car quota is missed (a failure), penalty = 10 cars; "
                "0.06 = day 1's 200 cars in about 3,300 agent steps"),
    EnvDefaults(_ATARI, 10.0, None,
                "losing the last life ends the game, penalty 10 points; reward scales differ per game, "
                "so relative thresholds need reward_per_step"),
    EnvDefaults(r"^CartPole-", 10.0, 1.0,
                "+1 every step: without the penalty every segment returns H and every pair ties"),
    EnvDefaults(r"^InvertedPendulum-", 10.0, 1.0, "+1 every step until the pole falls (ends the episode)"),
    EnvDefaults(r"^InvertedDoublePendulum-", 90.0, 9.0,
                "alive bonus ~9 per step until the pole falls; penalty = 10 steps"),
    EnvDefaults(r"^Hopper-", 30.0, 3.0, "falling ends the episode; penalty = 10 steps of competent reward"),
    EnvDefaults(r"^Walker2d-", 40.0, 4.0, "falling ends the episode; penalty = 10 steps of competent reward"),
    EnvDefaults(r"^Ant-", 50.0, 5.0, "flipping over ends the episode; penalty = 10 steps of competent reward"),
    EnvDefaults(r"^Humanoid-", 50.0, 5.0, "falling ends the episode; penalty = 10 steps of competent reward"),
    EnvDefaults(r"^HalfCheetah-", 0.0, 5.0, "episodes end only at the time limit (nothing to penalise)"),
    EnvDefaults(r"^Swimmer-", 0.0, 0.1, "episodes end only at the time limit"),
    EnvDefaults(r"^Pendulum-", 0.0, -0.75, "episodes end only at the time limit; reward <= 0 (upright = 0)"),
    EnvDefaults(r"^MountainCar-", 0.0, -1.0,
                "-1 every step and reaching the goal terminates the episode (a success; time limits are never "
                "penalised), so no default penalty; a negative one (a bonus) rewards reaching the goal"),
)
"""Project choices (the paper gives no numbers). Override with episode_end_penalty= / reward_per_step=."""

_FALLBACK = EnvDefaults("", 0.0, None, "no entry for this env: no penalty, no scale for relative thresholds")


def env_defaults(env_id: str) -> EnvDefaults:
    """The first :data:`ENV_DEFAULTS` entry whose pattern is found in ``env_id`` (or a no-penalty fallback)."""
    for entry in ENV_DEFAULTS:
        if re.search(entry.pattern, env_id):
            return entry
    return _FALLBACK


def myopic_weights(length: int, gamma: float) -> np.ndarray:
    """Weights gamma**(H-1-t), t = 0..H-1: the segment's last step weighs 1."""
    return gamma ** np.arange(length - 1, -1, -1, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# The teacher
# ---------------------------------------------------------------------------------------------
class Teacher:
    """A scripted teacher: :class:`TeacherParams` plus its own random generator.

    ``record`` is what is stored with every answer as ``labeler_params``: all knobs, plus how
    they were obtained (spec, relative thresholds and their scale, seed, env) when known.
    ``segment_length`` (set when thresholds were derived from a relative spec) is the segment
    length those thresholds assume; segments of another length are refused.
    """

    def __init__(self, params: TeacherParams, rng: np.random.Generator, name: str = "custom", *,
                 record: Mapping[str, Any] | None = None, segment_length: int | None = None):
        if not isinstance(params, TeacherParams):
            raise TypeError(f"params must be a TeacherParams, got {type(params).__name__}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be an explicit np.random.Generator (e.g. np.random.default_rng(seed)), got {rng!r}"
            )
        self.params = params
        self.rng = rng
        self.name = name
        self.segment_length = segment_length
        self.record: dict[str, Any] = {"teacher": name, **dict(record or {}), **params.to_record()}

    def __repr__(self) -> str:
        return f"Teacher({self.name!r}, {self.params})"

    # -- perceived returns ---------------------------------------------------------------------
    def returns_from_arrays(self, rewards: np.ndarray, terminations: np.ndarray) -> np.ndarray:
        """Perceived return over the last axis (time): sum_t gamma**(H-1-t) * (r_t - penalty * end_t),
        end_t = the episode terminated after step t (a time limit is no fault of the agent's)."""
        rewards = np.asarray(rewards, dtype=np.float64)
        ends = np.asarray(terminations, dtype=np.float64)
        if rewards.shape != ends.shape:
            raise ValueError(f"rewards have shape {rewards.shape} but terminations {ends.shape}; they must match")
        if not np.all(np.isfinite(rewards)):
            raise ValueError("segment true_rewards must be finite (found NaN or inf)")
        w = myopic_weights(rewards.shape[-1], self.params.gamma)
        return (rewards - self.params.episode_end_penalty * ends) @ w

    def segment_returns(self, segs: Segment | Sequence[Segment]) -> float | np.ndarray:
        """Perceived return of one segment (a float) or of each of a sequence (an array)."""
        if isinstance(segs, Segment):
            return float(self.returns_from_arrays(segs.true_rewards, segs.terminations))
        out = np.empty(len(segs), dtype=np.float64)
        by_len: dict[int, list[int]] = {}
        for i, s in enumerate(segs):
            by_len.setdefault(s.length, []).append(i)
        for _, idx in by_len.items():  # one vectorised product per segment length (usually one)
            r = np.stack([segs[i].true_rewards for i in idx])
            e = np.stack([segs[i].terminations for i in idx])
            out[idx] = self.returns_from_arrays(r, e)
        return out

    def pair_returns(self, queries: Sequence[Query]) -> np.ndarray:
        """(N, 2) perceived returns [R_left, R_right] of each query."""
        if self.segment_length is not None:
            for q in queries:
                for s in (q.left, q.right):
                    if s.length != self.segment_length:
                        raise ValueError(
                            f"query {q.id}: segment of {s.length} steps, but this teacher's thresholds were "
                            f"derived for segments of {self.segment_length} steps (segment_length)"
                        )
        segs = [s for q in queries for s in (q.left, q.right)]
        return self.segment_returns(segs).reshape(len(queries), 2) if segs else np.zeros((0, 2))

    def pair_progress(self, queries: Sequence[Query]) -> np.ndarray:
        """(N, 2) progress of each query's segments, with the myopic weights (rule 3a)."""
        out = np.zeros((len(queries), 2))
        for i, q in enumerate(queries):
            for j, seg in enumerate((q.left, q.right)):
                if seg.progress is None:
                    raise ValueError(
                        f"query {q.id}: the progress teacher (progress_margin={self.params.progress_margin}) needs "
                        f"segments with a driving-progress measure, and this env records none (Enduro does)")
                out[i, j] = np.asarray(seg.progress, dtype=np.float64) @ myopic_weights(seg.length, self.params.gamma)
        return out

    # -- answers -------------------------------------------------------------------------------
    def _decide(self, queries: Sequence[Query]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P(left chosen before mistakes), and the incomparable and equal masks, for every query."""
        r = self.pair_returns(queries)
        d = r[:, 0] - r[:, 1]
        p = bt_prob(r[:, 0], r[:, 1], self.params.beta)  # rule 4: sigmoid(beta * (R1 - R2))
        skip = np.maximum(r[:, 0], r[:, 1]) < self.params.skip_threshold  # rule 2
        tie = ~skip & (np.abs(d) <= self.params.equal_threshold)  # rule 3
        if math.isfinite(self.params.progress_margin) and tie.any():  # rule 3a
            pr = self.pair_progress(queries)
            by_progress = tie & (np.abs(pr[:, 0] - pr[:, 1]) > self.params.progress_margin)
            p = np.where(by_progress, (pr[:, 0] > pr[:, 1]).astype(float), p)
            tie &= ~by_progress
        answer = self.params.tie_answer  # rule 3b
        if answer == "coin":
            p = np.where(tie, 0.5, p)
        elif answer == "skip":
            skip = skip | tie
        equal = tie if answer == "equal" else np.zeros_like(tie)
        return p, skip, equal

    def answer_probabilities(self, queries: Sequence[Query]) -> np.ndarray:
        """(N, 4) exact probability of each answer, columns in ``ANSWERS`` order. Draws nothing."""
        p, skip, equal = self._decide(queries)
        eps = self.params.eps_mistake
        p = (1.0 - eps) * p + eps * (1.0 - p)
        out = np.stack([p, 1.0 - p, np.zeros_like(p), np.zeros_like(p)], axis=1)
        out[equal] = np.eye(4)[_EQUAL]
        out[skip] = np.eye(4)[_INCOMPARABLE]
        return out

    def answer_batch(self, queries: Sequence[Query]) -> list[str]:
        """Answer every query at once (vectorised: the learner sends hundreds at a time).

        Draws exactly two uniforms per query, as one (N, 2) array, so the labels equal those of
        answering the queries one by one with the same generator.
        """
        p, skip, equal = self._decide(queries)
        u = self.rng.random((len(queries), 2))
        left = u[:, 0] < p
        left ^= u[:, 1] < self.params.eps_mistake
        codes = np.where(left, _LEFT, _RIGHT)
        codes[equal] = _EQUAL
        codes[skip] = _INCOMPARABLE
        return [ANSWERS[c] for c in codes]

    def answer(self, query: Query) -> str:
        return self.answer_batch([query])[0]

    # -- resume --------------------------------------------------------------------------------
    def get_state(self) -> dict:
        """The generator's state (JSON-able), so a resumed run continues the same label stream."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------
_SPEC_FORMS = (
    "PRESET, PRESET:knob=value[,knob=value...], or knob=value[,...] (on top of rational); "
    f"presets: {', '.join(PRESETS)}; knobs: {', '.join(KNOBS + tuple(RELATIVE_KNOBS))} "
    f"(tie={'|'.join(TIE_ANSWERS)}, the others numbers)"
)
_PAIRS = {"skip_threshold": "skip_eps", "skip_eps": "skip_threshold",
          "equal_threshold": "equal_eps", "equal_eps": "equal_threshold"}


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _to_float(name: str, value: Any) -> float:
    if name == "tie" and isinstance(value, str):  # specs and records name the tie answer
        text = value.strip().lower()
        if text not in TIE_ANSWERS:
            raise ValueError(f"knob tie: {value!r} is not one of {', '.join(TIE_ANSWERS)}")
        return TIE_ANSWERS[text]
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return float({"inf": "inf", "+inf": "inf", "-inf": "-inf"}.get(text, text))
        except ValueError:
            raise ValueError(f"knob {name}: {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"knob {name}: {value!r} is not a number")
    return float(value)


def _tie_name(v: float) -> str:
    for name, code in TIE_ANSWERS.items():
        if v == code:
            return name
    raise ValueError(f"tie must be one of {_TIE_CHOICES}, got {v!r}")


def _fmt_knob(name: str, v: float) -> str:
    """A knob's value as a spec writes it: the tie answer by name, any other knob by :func:`_fmt`."""
    return _tie_name(v) if name == "tie" else _fmt(v)


def _fmt(v: float) -> str:
    """Shortest text that parses back to exactly ``v`` (so a teacher's name is a faithful spec)."""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def _split_spec(spec: str) -> tuple[str | None, dict[str, float]]:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty teacher spec; allowed forms: {_SPEC_FORMS}")
    text = spec.strip()
    preset, _, knob_text = text.partition(":") if ":" in text else (None, "", text)
    if preset is None and "=" not in text:
        preset, knob_text = text, ""
    if preset is not None:
        preset = preset.strip()
        if preset not in PRESETS:
            raise ValueError(f"unknown teacher preset {preset!r} in spec {spec!r}; allowed forms: {_SPEC_FORMS}")
    knobs: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in knob_text.split(","))):
        name, eq, value = (p.strip() for p in item.partition("="))
        if not eq or not value:
            raise ValueError(f"teacher spec {spec!r}: {item!r} is not knob=value; allowed forms: {_SPEC_FORMS}")
        if name in knobs:
            raise ValueError(f"teacher spec {spec!r} sets knob {name} twice")
        knobs[name] = _to_float(name, value)
    return preset, knobs


def _check_knobs(knobs: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(knobs) - set(KNOBS) - set(RELATIVE_KNOBS))
    if unknown:
        raise ValueError(f"unknown teacher knob(s) {unknown} in {where}; allowed forms: {_SPEC_FORMS}")
    for rel, ab in RELATIVE_KNOBS.items():
        if rel in knobs and ab in knobs:
            raise ValueError(f"{where} sets both {rel} (relative) and {ab} (absolute): define that threshold once")


def _layer(base: dict[str, float], top: Mapping[str, float]) -> dict[str, float]:
    """``top`` over ``base``; setting one form of a threshold drops the other form from below."""
    out = dict(base)
    for k, v in top.items():
        out.pop(_PAIRS.get(k, ""), None)
        out[k] = v
    return out


def format_spec(preset: str | None = None, **knobs: Any) -> str:
    """The canonical spec string (also the teacher's name), e.g. for an Optuna trial.

    ``format_spec("stoc", beta=2.0) == "stoc:beta=2"``; ``format_spec(gamma=0.9) == "gamma=0.9"``;
    ``format_spec("progress", tie="skip") == "progress:tie=skip"``.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown teacher preset {preset!r}; allowed forms: {_SPEC_FORMS}")
    _check_knobs(knobs, "format_spec")
    order = KNOBS + tuple(RELATIVE_KNOBS)
    body = ",".join(f"{k}={_fmt_knob(k, _to_float(k, knobs[k]))}" for k in order if k in knobs)
    if preset is None:
        return body or "rational"
    return f"{preset}:{body}" if body else preset


def parse_teacher(spec: str, rng: np.random.Generator, *, reward_per_step: float | None = None,
                  segment_length: int | None = None, record: Mapping[str, Any] | None = None,
                  **defaults: Any) -> Teacher:
    """Build a teacher from a spec string.

    Layers, later wins: ``defaults`` (e.g. the env's episode_end_penalty) < the preset < the
    spec's own knobs. ``skip_eps`` / ``equal_eps`` become absolute thresholds here, once, which
    needs ``reward_per_step`` (the env's typical reward per step) and ``segment_length``.
    Raises ValueError naming the bad preset, knob or value and the allowed forms.
    """
    preset, spec_knobs = _split_spec(spec)
    _check_knobs(spec_knobs, f"spec {spec!r}")
    defaults = {k: v for k, v in defaults.items() if v is not None}
    _check_knobs(defaults, "teacher defaults")
    knobs = _layer(_layer({k: _to_float(k, v) for k, v in defaults.items()}, PRESETS.get(preset or "rational", {})),
                   spec_knobs)
    # Resolve relative thresholds into absolute ones (the teacher's only unit).
    gamma = knobs.get("gamma", 1.0)
    rel = {k: knobs.pop(k) for k in list(knobs) if k in RELATIVE_KNOBS}
    info: dict[str, Any] = {"spec": spec.strip()}
    length_bound = None
    if rel:
        for k, v in rel.items():
            if not (v >= 0.0 and math.isfinite(v)):
                raise ValueError(f"{k} must be in [0, inf) (a fraction of a typical segment's return), got {v}")
        if reward_per_step is None or not math.isfinite(reward_per_step):
            raise ValueError(
                f"{' and '.join(rel)} in {spec!r} is relative to the typical reward per step, which is not known "
                f"here: pass reward_per_step= (see oracles.teacher.ENV_DEFAULTS), or give "
                f"{' / '.join(RELATIVE_KNOBS[k] for k in rel)} in segment-return units"
            )
        if segment_length is None or segment_length < 1:
            raise ValueError(f"{' and '.join(rel)} needs segment_length >= 1 (steps per segment), got {segment_length}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1] (1 = not myopic), got {gamma}")
        typical = float(reward_per_step) * float(myopic_weights(segment_length, gamma).sum())
        if "skip_eps" in rel:
            knobs["skip_threshold"] = rel["skip_eps"] * typical
        if "equal_eps" in rel:
            knobs["equal_threshold"] = rel["equal_eps"] * abs(typical)
        info.update(rel, reward_per_step=float(reward_per_step), segment_length=int(segment_length),
                    typical_segment_return=typical)
        length_bound = int(segment_length)
    params = TeacherParams(**knobs)
    name = format_spec(preset, **spec_knobs)
    return Teacher(params, rng, name, record={**info, **dict(record or {})}, segment_length=length_bound)


def teacher_for_env(spec: str, rng: np.random.Generator, *, env_id: str, segment_length: int = 25,
                    reward_per_step: float | None = None, episode_end_penalty: float | None = None,
                    record: Mapping[str, Any] | None = None, **defaults: Any) -> Teacher:
    """:func:`parse_teacher` with the env's defaults (:data:`ENV_DEFAULTS`) filled in.

    ``episode_end_penalty`` / ``reward_per_step`` given here (not None) override the table; a
    knob in the spec itself overrides both.
    """
    d = env_defaults(env_id)
    penalty = d.episode_end_penalty if episode_end_penalty is None else episode_end_penalty
    rps = d.reward_per_step if reward_per_step is None else reward_per_step
    return parse_teacher(spec, rng, reward_per_step=rps, segment_length=segment_length,
                         record={"env_id": env_id, **dict(record or {})},
                         **{"episode_end_penalty": penalty, **defaults})


def _main(argv: Iterable[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m oracles.teacher",
                                 description="Scripted teacher presets and per-env defaults.")
    ap.add_argument("spec", nargs="?", help="show the parameters this spec resolves to")
    ap.add_argument("--env", default="ALE/Enduro-v5")
    ap.add_argument("--segment-length", type=int, default=25)
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.spec:
        t = teacher_for_env(args.spec, np.random.default_rng(0), env_id=args.env, segment_length=args.segment_length)
        for k, v in t.record.items():
            print(f"{k:>24} = {v}")
        return
    print("presets (knobs on top of rational):")
    for name, knobs in PRESETS.items():
        print(f"  {name:<9} {knobs or '(defaults)'}")
    print("\nper-env defaults (first match wins):")
    for e in ENV_DEFAULTS:
        print(f"  {e.pattern:<26} penalty={_fmt(e.episode_end_penalty):<5} "
              f"reward_per_step={e.reward_per_step}  # {e.why}")


if __name__ == "__main__":
    _main()
