"""The reward model r̂: an ensemble of predictors of r̂(o, a), fitted to comparisons.

Paper, section 2.2.3 and appendix A. One role per module:

- ``bradley_terry``: the preference model, P(left > right) from two segments' summed rewards,
  and its cross-entropy loss with the 10% random-answer term.
- ``networks``: the members' networks, all fused in one module (the paper's Atari CNN; an MLP
  for vector observations), and their dropout.
- ``dataset``: the last 3,000 comparisons with each member's bootstrap and 1/e hold-out.
- ``ensemble``: :class:`RewardEnsemble`, r̂ for the policy: inference, per-member
  normalisation, save and load.
- ``normalization``: the rules that keep a member that learnt nothing out of r̂.
- ``fitting``: the ensemble's training half: Adam on minibatches, evaluation, adaptive L2.

When to fit, and on which thread: rlhp_core/fit_schedule.py and rlhp_core/background_fit.py.

The names below are importable from the package (``from rlhp_core.reward import
RewardEnsemble``). They are imported on first use, so that ``rlhp_core.reward.bradley_terry``
(which the scripted teachers use) loads without torch.
"""

from importlib import import_module

_EXPORTS = {
    "bt_prob": "bradley_terry", "preference_loss_per_item": "bradley_terry",
    "FusedCNN": "networks", "FusedMLP": "networks",
    "PreferenceDataset": "dataset", "RewardEnsemble": "ensemble", "L2Rule": "fitting",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'rlhp_core.reward' has no attribute {name!r}")
