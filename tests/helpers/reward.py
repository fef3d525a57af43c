"""References for the reward model, written the plain way: what the fused modules and the learner
compute. The reward model's unit tests and the reward and loop benchmarks share them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlhp_core.reward import RewardEnsemble, bt_prob
from rlhp_core.reward.networks import CNN_FILTERS, HIDDEN, LEAKY_SLOPE, FusedCNN


class _Scale(nn.Module):
    def forward(self, x):
        return x.float() / 255.0 if x.dtype == torch.uint8 else x


def reference_members(net: nn.Module) -> list[nn.Sequential]:
    """The M networks of a fused module as plain, separate ``nn.Sequential`` nets (same weights,
    batch-norm statistics and train/eval mode): the fused == separate tests' reference and
    tests/benchmarks/test_bench_reward.py's naive baseline."""
    m = net.n_members
    out = []
    with torch.no_grad():
        for j in range(m):
            if isinstance(net, FusedCNN):
                layers: list[nn.Module] = [_Scale()]
                cin = net.obs_shape[0]
                for conv, bn in zip(net.convs, net.bns):
                    c = nn.Conv2d(cin, CNN_FILTERS, conv.kernel_size, conv.stride)
                    sl = slice(j * CNN_FILTERS, (j + 1) * CNN_FILTERS)
                    c.weight.copy_(conv.weight[sl])
                    c.bias.copy_(conv.bias[sl])
                    b = nn.BatchNorm2d(CNN_FILTERS, momentum=bn.momentum, eps=bn.eps)
                    b.weight.copy_(bn.weight[sl])
                    b.bias.copy_(bn.bias[sl])
                    b.running_mean.copy_(bn.running_mean[sl])
                    b.running_var.copy_(bn.running_var[sl])
                    b.num_batches_tracked.copy_(bn.num_batches_tracked)
                    layers += [c, b, nn.LeakyReLU(LEAKY_SLOPE)]
                    if net.dropout > 0:
                        layers.append(nn.Dropout(net.dropout))
                    cin = CNN_FILTERS
                fc = nn.Linear(net.flat, HIDDEN)
                fc.weight.copy_(net.fc_w[j].T)
                fc.bias.copy_(net.fc_b[j])
                o = nn.Linear(HIDDEN, 1)
                o.weight.copy_(net.out_w[j].T)
                o.bias.copy_(net.out_b[j])
                layers += [nn.Flatten(), fc, nn.LeakyReLU(LEAKY_SLOPE), o]
            else:
                layers = []
                for i, (w, b) in enumerate(zip(net.ws, net.bs)):
                    lin = nn.Linear(w.shape[1], w.shape[2])
                    lin.weight.copy_(w[j].T)
                    lin.bias.copy_(b[j])
                    layers.append(lin)
                    if i < len(net.ws) - 1:
                        layers.append(nn.LeakyReLU(LEAKY_SLOPE))
                        if net.dropout > 0:
                            layers.append(nn.Dropout(net.dropout))
            seq = nn.Sequential(*layers)
            seq.train(net.training)
            out.append(seq.to(next(net.parameters()).device))
    return out


def segment_returns(ens: RewardEnsemble, obs: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
    """Each member's summed raw reward of each segment, the returns the preference model compares:
    obs (S, T, *obs_shape), actions (S, T, ...) or None -> (M, S)."""
    s, t = obs.shape[:2]
    flat_a = None if actions is None else actions.reshape((s * t,) + actions.shape[2:])
    return ens.raw_rewards(obs.reshape((s * t,) + obs.shape[2:]), flat_a).reshape(ens.n_members, s, t).sum(axis=2)


def member_probs(ens: RewardEnsemble, left_obs, left_actions, right_obs, right_actions) -> np.ndarray:
    """Each member's P(left > right) for P pairs of segments: (M, P), computed on the frames."""
    return bt_prob(segment_returns(ens, left_obs, left_actions), segment_returns(ens, right_obs, right_actions))
