"""The learned reward r̂ as a gymnasium wrapper, so that any agent can train on it.

::

    from rlhp_core.trained import load_reward_model, make_env
    from rlhp_core.reward_wrapper import LearnedRewardWrapper

    env = LearnedRewardWrapper(make_env("runs/cartpole"), load_reward_model("runs/cartpole"))

``make_env`` gives the observation the reward model was trained on (on Atari the project's
blanked 84x84x4 stack, which a stock ``gym.make`` chain does not reproduce); on vector-observation
envs a plain ``gym.make(env_id)`` works as well. See docs/using-a-trained-run.md.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from .reward import RewardEnsemble

__all__ = ["LearnedRewardWrapper"]


class LearnedRewardWrapper(gym.Wrapper):
    """Replaces the env's reward by r̂(o_t, a_t) and keeps the true one in ``info["true_reward"]``.

    r̂ is ``RewardEnsemble.predict``: each member's output normalised by the run's statistics,
    averaged over members, exactly what the run's policy was trained on. It is scored on the
    observation the action was taken in (o_t, before the step), as the learner does.

    ``terminations_as_truncations``: report the env's terminations as truncations (with
    ``info["terminated"] = True``). r̂ is normalised to mean 0 over the states of the run's
    policy, so about half of the states a good agent sees score below 0. An agent that treats a
    termination as the end of all reward (no bootstrap, e.g. Stable-Baselines3 on ``terminated``)
    can then prefer to end the episode early, the opposite of what the labels asked. The project's
    learner never shows the agent a termination on preference runs (``episode_signal`` off, the
    paper's one continuous stream), and agents bootstrap a truncation from the final observation
    as if the episode went on, which is that setting's equivalent. Off: the env's own flags.
    """

    def __init__(self, env: gym.Env, reward_model: RewardEnsemble, *, terminations_as_truncations: bool = False):
        super().__init__(env)
        self.reward_model = reward_model
        self.terminations_as_truncations = bool(terminations_as_truncations)
        self._check_spaces(env, reward_model)
        self._discrete = reward_model.n_actions is not None
        self._obs: np.ndarray | None = None

    @staticmethod
    def _check_spaces(env: gym.Env, model: RewardEnsemble) -> None:
        """The env must produce what the model reads; a mismatch would fail (or, worse, not fail) later."""
        obs_space, act_space = env.observation_space, env.action_space
        shape = tuple(getattr(obs_space, "shape", None) or ())
        if shape != model.obs_shape:
            hint = (" (Atari: wrap rlhp_core.trained.make_env(run_dir), which gives the project's "
                    "blanked 84x84x4 stack)" if len(model.obs_shape) == 3 else "")
            raise ValueError(f"observation space {obs_space} does not fit the reward model, which reads "
                             f"observations of shape {model.obs_shape}{hint}")
        if model.arch == "cnn" and obs_space.dtype != np.uint8:
            raise ValueError(f"observation space {obs_space}: the reward model reads uint8 frames")
        if model.n_actions is not None:
            ok = isinstance(act_space, gym.spaces.Discrete) and int(act_space.n) == model.n_actions \
                and int(act_space.start) == 0
            want = f"Discrete({model.n_actions})"
        else:
            ok = isinstance(act_space, gym.spaces.Box) and tuple(act_space.shape) == model.act_shape
            want = f"a Box of shape {model.act_shape}"
        if not ok:
            raise ValueError(f"action space {act_space} does not fit the reward model, which reads {want}")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = obs
        return obs, info

    def step(self, action):
        if self._obs is None:
            raise gym.error.ResetNeeded("LearnedRewardWrapper: call reset() before step()")
        obs, true_reward, terminated, truncated, info = self.env.step(action)
        a = np.asarray(action)
        a = a.astype(np.int64).reshape(1) if self._discrete else a.astype(np.float32).reshape(1, *self.reward_model.act_shape)
        reward = float(self.reward_model.predict(np.asarray(self._obs)[None], a)[0])
        info = {**info, "true_reward": float(true_reward)}
        if terminated and self.terminations_as_truncations:
            info["terminated"] = True
            terminated, truncated = False, True
        self._obs = obs
        return obs, reward, terminated, truncated, info
