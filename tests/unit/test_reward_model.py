"""Reward model: networks, fused == separate, learning, dataset, save/load, bad input."""

import io
import math

import numpy as np
import pytest
import torch


from rlhp_core.config import TrainConfig, resolve
from rlhp_core.fit_schedule import Plateau
from rlhp_core.reward import L2Rule, PreferenceDataset, RewardEnsemble
from rlhp_core.reward.networks import CNN_LAYERS, FusedCNN, FusedMLP, dropout

from tests.helpers.reward import member_probs, reference_members, segment_returns

torch.set_num_threads(1)

ATARI = (4, 84, 84)


# --- helpers ------------------------------------------------------------------------------


def atari_segment(rng, t=3, reset_at=None):
    """(T, 4, 84, 84) uint8 stacks over a stream of frames, newest last (FrameStackObservation)."""
    frames = rng.integers(0, 256, size=(t + 3, 84, 84), dtype=np.uint8)
    obs = np.stack([frames[i : i + 4] for i in range(t)])
    if reset_at is not None:  # an episode reset: a fresh stack of the reset frame
        obs[reset_at] = rng.integers(0, 256, size=(84, 84), dtype=np.uint8)[None]
    return obs, rng.integers(0, 6, size=t)


def atari_dataset(n=4, t=3, seed=0, members=3):
    rng = np.random.default_rng(seed)
    ds = PreferenceDataset(capacity=100, n_members=members, seed=seed)
    for i in range(n):
        (lo, la), (ro, ra) = atari_segment(rng, t), atari_segment(rng, t)
        ds.add(lo, la, ro, ra, ["left", "right", "equal"][i % 3], key=i)
    return ds


class LinearTask:
    """Vector obs, Discrete actions, true reward r = w.o + u[a]; rational labels."""

    def __init__(self, seed=0, d=4, a=3, t=10):
        self.rng = np.random.default_rng(seed)
        self.d, self.a, self.t = d, a, t
        self.w = self.rng.normal(size=d)
        self.u = self.rng.normal(size=a)

    def pairs(self, n, random_labels=False):
        o = self.rng.normal(size=(n, 2, self.t, self.d)).astype(np.float32)
        a = self.rng.integers(0, self.a, size=(n, 2, self.t))
        ret = (o @ self.w).sum(-1) + self.u[a].sum(-1)
        left = ret[:, 0] > ret[:, 1]
        if random_labels:
            left = self.rng.random(n) < 0.5
        return o, a, left

    def dataset(self, n, seed=0, random_labels=False, members=3):
        ds = PreferenceDataset(capacity=3000, n_members=members, seed=seed)
        o, a, left = self.pairs(n, random_labels)
        for i in range(n):
            ds.add(o[i, 0], a[i, 0], o[i, 1], a[i, 1], "left" if left[i] else "right", key=i)
        return ds


def vector_ensemble(**kw):
    kw.setdefault("seed", 0)
    return RewardEnsemble((4,), 3, **kw)


def params(ens):
    return torch.cat([p.detach().flatten() for p in ens.net.parameters()])


# --- networks --------------------------------------------------------------------------------


def test_atari_cnn_is_the_papers_network():
    net = FusedCNN(3, ATARI, dropout=0.5)
    assert [(c.kernel_size[0], c.stride[0]) for c in net.convs] == list(CNN_LAYERS) == [(7, 3), (5, 2), (3, 1), (3, 1)]
    assert all(c.out_channels == 3 * 16 and c.groups == 3 for c in net.convs)
    assert len(net.bns) == 4 and net.dropout == 0.5
    # 84 -> 26 -> 11 -> 9 -> 7, then dense 64 and a scalar
    assert net.flat == 16 * 7 * 7
    assert net.fc_w.shape == (3, 784, 64) and net.out_w.shape == (3, 64, 1)


def test_atari_smoke_shapes_on_random_frames():
    ens = RewardEnsemble(ATARI, 6, dropout=0.5, reward_std=0.05, batch_size=2, eval_size=4)
    assert ens.arch == "cnn"
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, size=(5,) + ATARI, dtype=np.uint8)
    r = ens.predict(obs)
    assert r.shape == (5,) and r.dtype == np.float32 and np.isfinite(r).all()
    # values, not only shapes: each member's raw output is its plain network's (eval mode), the
    # normalised members are (raw - mean) / std * reward_std * weight, and r-hat is their mean
    refs = reference_members(ens.net)
    for ref in refs:
        ref.eval()
    with torch.no_grad():
        plain = np.stack([ref(torch.from_numpy(obs)).squeeze(-1).double().numpy() for ref in refs])
    np.testing.assert_allclose(ens.raw_rewards(obs), plain, rtol=1e-4, atol=1e-5)
    members = ens.predict_members(obs, np.zeros(5, dtype=np.int64))
    assert members.shape == (3, 5) and members.std(axis=1).min() > 0  # the members differ between frames
    expect = (plain - ens.norm_mean[:, None]) / ens.norm_std[:, None] * (ens.reward_std * ens.norm_weight[:, None])
    np.testing.assert_allclose(members, expect, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r, members.mean(axis=0), rtol=1e-5, atol=1e-6)
    segs = np.stack([atari_segment(rng)[0] for _ in range(2)])
    returns = segment_returns(ens, segs)
    with torch.no_grad():  # each member's summed reward of each segment, the plain way
        plain_returns = np.array([[ref(torch.from_numpy(seg)).sum().item() for seg in segs] for ref in refs])
    assert returns.shape == (3, 2)
    np.testing.assert_allclose(returns, plain_returns, rtol=1e-4, atol=1e-4)
    p = member_probs(ens, segs, None, segs[::-1], None)
    assert p.shape == (3, 2) and ((p > 0) & (p < 1)).all()
    # Bradley-Terry on those returns, and P(a > b) + P(b > a) = 1 (the pairs are swapped)
    np.testing.assert_allclose(p[:, 0], 1 / (1 + np.exp(-(plain_returns[:, 0] - plain_returns[:, 1]))), rtol=1e-4)
    np.testing.assert_allclose(p[:, 0] + p[:, 1], 1.0, rtol=1e-6)
    m = ens.train(atari_dataset(), 2, np.random.default_rng(0))
    for k in ("train_loss", "val_loss", "val_accuracy", "l2", "train_loss_eval"):
        assert k in m
    assert math.isfinite(m["train_loss"]) and len(m["l2"]) == 3
    # torch input and .to() work as well
    ens.to("cpu")
    assert np.allclose(ens.predict(torch.from_numpy(obs)), ens.predict(obs))
    # reversed and read-only numpy views are fine
    np.testing.assert_allclose(ens.predict(obs[::-1]), ens.predict(obs)[::-1], rtol=1e-5, atol=1e-7)
    obs.setflags(write=False)
    assert ens.predict(obs).shape == (5,)


def _randomise_bn(net):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in getattr(net, "bns", []):
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.rand(bn.bias.shape, generator=g) * 0.2 - 0.1)
            bn.running_mean.copy_(torch.rand(bn.running_mean.shape, generator=g) * 0.2 - 0.1)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("mode", ["split", "grouped"])
@pytest.mark.parametrize("train", [False, True])
def test_fused_cnn_equals_separate_nets(mode, train):
    torch.manual_seed(0)
    net = FusedCNN(3, ATARI, dropout=0.0, conv_mode=mode)
    _randomise_bn(net)
    net.train(train)
    refs = reference_members(net)
    x = torch.randint(0, 256, (3, 6) + ATARI, dtype=torch.uint8)
    with torch.no_grad():
        fused = net.forward_members(x)
        sep = torch.stack([refs[j](x[j]).squeeze(-1) for j in range(3)])
        torch.testing.assert_close(fused, sep, atol=1e-5, rtol=1e-5)
        if not train:  # shared input: every member sees the same frames
            shared = net.forward_shared(x[0])
            torch.testing.assert_close(shared, torch.stack([r(x[0]).squeeze(-1) for r in refs]), atol=1e-5, rtol=1e-5)
    if train:  # batch norm running statistics moved the same way, per member
        bn_refs = [[m for m in r if isinstance(m, torch.nn.BatchNorm2d)] for r in refs]
        for i, bn in enumerate(net.bns):
            for j in range(3):
                torch.testing.assert_close(bn.running_mean[16 * j : 16 * (j + 1)], bn_refs[j][i].running_mean)
                torch.testing.assert_close(bn.running_var[16 * j : 16 * (j + 1)], bn_refs[j][i].running_var)


def test_fused_mlp_equals_separate_nets():
    torch.manual_seed(0)
    net = FusedMLP(3, 7)
    refs = reference_members(net)
    x = torch.randn(3, 11, 7)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_members(x), torch.stack([refs[j](x[j]).squeeze(-1) for j in range(3)]))
        torch.testing.assert_close(net.forward_shared(x[0]), torch.stack([r(x[0]).squeeze(-1) for r in refs]))


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_fused_training_step_equals_separate_training(arch):
    """Same gradients: one SGD step on the fused module == one step on each separate net.
    (Adam is elementwise, so equal gradients mean equal Adam updates; comparing Adam's first
    step directly would amplify float rounding in near-zero gradients, as it is ~lr*sign(g).)"""
    torch.manual_seed(0)
    if arch == "cnn":
        net = FusedCNN(3, ATARI, dropout=0.0)
        x = torch.randint(0, 256, (3, 8) + ATARI, dtype=torch.uint8)
    else:
        net = FusedMLP(3, 5)
        x = torch.randn(3, 8, 5)
    net.train()
    refs = reference_members(net)
    target = torch.randn(3, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ((net.forward_members(x) - target) ** 2).mean(1).sum().backward()
    opt.step()
    for j, ref in enumerate(refs):
        ref.train()
        o = torch.optim.SGD(ref.parameters(), lr=0.1)
        ((ref(x[j]).squeeze(-1) - target[j]) ** 2).mean().backward()
        o.step()
    net.eval()
    after = reference_members(net)
    for a, r in zip(after, refs):
        for pa, pr in zip(a.parameters(), r.parameters()):
            torch.testing.assert_close(pa, pr, atol=1e-5, rtol=1e-5)


def test_fast_dropout_has_dropouts_distribution():
    torch.manual_seed(0)
    for p in (0.5, 0.25, 0.3):
        x = torch.ones(200, 16, 10, 10)
        y = dropout(x, p, training=True)
        values = torch.unique(y).tolist()
        assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p))
        assert (y == 0).float().mean().item() == pytest.approx(p, abs=0.005)
    xc = torch.ones(50, 16, 10, 10).contiguous(memory_format=torch.channels_last)
    assert dropout(xc, 0.5, True).is_contiguous(memory_format=torch.channels_last)
    assert dropout(xc, 0.5, training=False) is xc


# --- learning ----------------------------------------------------------------------------


def test_learns_a_linear_reward_from_rational_preferences():
    task = LinearTask(seed=1)
    ds = task.dataset(300)
    ens = vector_ensemble()
    m = Plateau(None, 30, 30).run(ens, ds)  # 30 epochs, as the learner pretrains
    assert m["val_accuracy"] >= 0.85
    # Fresh pairs the model never saw, judged by the ensemble's normalised prediction.
    o, a, left = task.pairs(400)
    ens.update_normalization(*ds.normalization_sample(500))
    r_l, r_r = (ens.predict(o[:, k].reshape(-1, 4), a[:, k].reshape(-1)).reshape(400, -1).sum(1) for k in (0, 1))
    assert ((r_l > r_r) == left).mean() >= 0.9


def test_box_actions():
    ens = RewardEnsemble((3,), (1,), seed=0)
    rng = np.random.default_rng(0)
    ds = PreferenceDataset(50, 3)
    for _ in range(6):
        ds.add(rng.normal(size=(5, 3)), rng.normal(size=(5, 1)).astype(np.float32),
               rng.normal(size=(5, 3)), rng.normal(size=(5, 1)).astype(np.float32), "left")
    ens.train(ds, 8, rng)
    assert ens.predict(rng.normal(size=(4, 3)), rng.normal(size=(4, 1))).shape == (4,)


def test_adaptive_l2_raises_when_overfitting_and_lowers_when_not():
    task = LinearTask(seed=2)
    # Random labels on 30 comparisons: the nets memorise their training part (train loss
    # well below ln 2) while validation stays at chance or worse -> val > 1.5 x train.
    noisy = task.dataset(30, random_labels=True)
    ens = vector_ensemble(l2_rule=L2Rule(init=1e-4))
    m = ens.train(noisy, 6000, np.random.default_rng(0))
    ratio = np.array(m["val_loss_members"]) / np.array(m["train_loss_eval_members"])
    assert (ratio > 1.5).all()
    assert (np.array(m["l2"]) > 1e-4).all()
    # Heavily regularised: train and validation loss alike (ratio < 1.1) -> L2 goes down.
    ens = vector_ensemble(l2_rule=L2Rule(init=1.0))
    m = ens.train(task.dataset(200), 320, np.random.default_rng(0))
    ratio = np.array(m["val_loss_members"]) / np.array(m["train_loss_eval_members"])
    assert (ratio < 1.1).all()
    assert (np.array(m["l2"]) < 1.0).all()
    # Off: unchanged
    ens = vector_ensemble(l2_rule=L2Rule(init=1e-4, adaptive=False))
    m = ens.train(noisy, 320, np.random.default_rng(0))
    assert m["l2"] == [1e-4] * 3


def test_normalisation_gives_zero_mean_and_target_std():
    task = LinearTask(seed=3)
    ds = task.dataset(30)
    for members, std in ((3, 1.0), (1, 0.05)):
        ens = vector_ensemble(n_members=members, reward_std=std)
        ens.train(task.dataset(30, members=members), 64, np.random.default_rng(0))
        obs, act = ds.normalization_sample(200, np.random.default_rng(0))
        ens.update_normalization(obs, act)
        per = ens.predict_members(obs, act)
        np.testing.assert_allclose(per.mean(axis=1), 0.0, atol=1e-6)
        np.testing.assert_allclose(per.std(axis=1), std, rtol=1e-6)
        r = ens.predict(obs, act)
        assert abs(r.mean()) < 1e-5 and r.std() <= std * (1 + 1e-5)
        if members == 1:
            assert r.std() == pytest.approx(std, rel=1e-5)


# --- determinism, save / load -------------------------------------------------------------


def test_same_seed_same_parameters_and_losses():
    task = LinearTask(seed=4)
    ds = task.dataset(60, seed=7)
    runs = []
    for _ in range(2):
        ens = vector_ensemble(seed=5, dropout=0.5)  # dropout: the torch RNG is seeded too
        m = ens.train(ds, 96, np.random.default_rng(11))
        runs.append((params(ens), m["train_loss"], m["val_loss"]))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    assert runs[0][1:] == runs[1][1:]
    assert not torch.equal(params(vector_ensemble(seed=6)), params(vector_ensemble(seed=5)))
    # Training does not touch the global torch RNG (the learner's own streams stay put).
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    vector_ensemble(seed=5, dropout=0.5).train(ds, 32, np.random.default_rng(1))
    assert torch.equal(torch.rand(1), before)


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_save_load_gives_identical_predictions_and_training(arch):
    rng = np.random.default_rng(0)
    if arch == "mlp":
        ds = LinearTask(seed=5).dataset(40)
        make = lambda seed: vector_ensemble(seed=seed, dropout=0.5)  # noqa: E731
        obs, act = ds.normalization_sample(50)
        n = 64
    else:
        ds = atari_dataset(n=4)
        make = lambda seed: RewardEnsemble(ATARI, 6, dropout=0.5, reward_std=0.05, batch_size=2, eval_size=2, seed=seed)  # noqa: E731
        obs, act = ds.normalization_sample(6)
        n = 2
    a = make(0)
    a.train(ds, n, rng)
    a.update_normalization(obs, act)
    b = make(123)
    b.load_state_dict(_roundtrip(a.state_dict()))
    np.testing.assert_array_equal(a.predict(obs, act), b.predict(obs, act))
    assert b.l2.tolist() == a.l2.tolist() and b.train_steps == a.train_steps
    # Training goes on identically (optimiser state, BN statistics, internal RNG restored).
    ma = a.train(ds, n)
    mb = b.train(ds, n)
    assert ma["train_loss"] == mb["train_loss"]
    torch.testing.assert_close(params(a), params(b), rtol=0, atol=0)


def test_load_refuses_another_models_state():
    a = vector_ensemble()
    b = RewardEnsemble((5,), 3)
    with pytest.raises(ValueError, match="reward model state is for"):
        b.load_state_dict(a.state_dict())


# --- dataset -------------------------------------------------------------------------------


def test_dataset_keeps_the_most_recent_and_skips_incomparable():
    ds = PreferenceDataset(capacity=3, n_members=2)
    o, a = np.zeros((2, 3), np.float32), np.zeros(2, np.int64)
    assert ds.add(o, a, o, a, "incomparable", key="x") is False
    for k in range(5):
        assert ds.add(o + k, a, o, a, "left", key=k)
    assert ds.keys() == [2, 3, 4] and len(ds) == 3
    assert ds.remove(3) and ds.keys() == [2, 4]
    assert not ds.remove("nope")


def test_bootstrap_weights_and_one_over_e_holdout():
    ds = PreferenceDataset(capacity=3000, n_members=3, seed=0)
    o, a = np.zeros((1, 1), np.float32), np.zeros(1, np.int64)
    for i in range(3000):
        ds.add(o, a, o, a, "left", key=f"q{i}")  # keyed, as the learner adds queries
    w = np.stack([it.weights for it in ds._items])
    val = np.stack([it.val for it in ds._items])
    assert val.mean() == pytest.approx(1 / math.e, abs=0.02)  # 9,000 draws: sd 0.005
    assert w.mean() == pytest.approx(1.0, abs=0.04)  # Poisson(1)
    np.testing.assert_array_equal(val, w == 0)
    for m in range(3):
        ms = ds.train_multiset(m)
        assert len(ms) == w[:, m].sum()
        assert not np.isin(ds.val_indices(m), ms).any()  # held-out never trained on
    assert not np.array_equal(val[:, 0], val[:, 1])  # independent per member


def test_compact_atari_storage_round_trips_exactly():
    rng = np.random.default_rng(0)
    ds = PreferenceDataset(capacity=10, n_members=2)
    (lo, la), (ro, ra) = atari_segment(rng, t=25), atari_segment(rng, t=25, reset_at=10)
    ds.add(lo, la, ro, ra, "right")
    it = ds._items[0]
    assert it.left.compact and it.left.obs.shape == (28, 84, 84)  # 25 + 3 distinct frames
    assert not it.right.compact  # an episode reset breaks the overlap: stored whole
    obs, act, mu = ds.gather(np.array([[0], [0]]))
    assert obs.shape == (2, 50) + ATARI and act.shape == (2, 50)
    np.testing.assert_array_equal(obs[1, :25], lo)
    np.testing.assert_array_equal(obs[0, 25:], ro)
    np.testing.assert_array_equal(act[0, :25], la)
    np.testing.assert_array_equal(mu, [[[0, 1]], [[0, 1]]])
    # the caller's arrays are copied, not referenced
    lo[:] = 0
    np.testing.assert_array_equal(ds.gather(np.array([[0], [0]]))[0][0, 0], obs[0, 0])
    # memory: 28 of 100 frames per overlapping segment
    assert it.left.obs.nbytes == 28 * 84 * 84


def test_a_dataset_rebuilt_from_the_same_labels_has_the_same_splits():
    """How the learner rebuilds its dataset from the label store on resume: re-adding the labels
    (keyed by query id) with the same seed gives the same splits, even in another order and with
    some labels left out (e.g. retracted); without keys, one seeded stream."""
    task = LinearTask(seed=6)
    ds = task.dataset(20, seed=3)
    o, a, left = task.pairs(20)
    rebuilt = PreferenceDataset(capacity=3000, n_members=3, seed=3)
    for i in reversed(range(0, 20, 2)):
        rebuilt.add(o[i, 0], a[i, 0], o[i, 1], a[i, 1], "left", key=i)
    by_key = {it.key: it.weights.tolist() for it in ds._items}
    assert all(it.weights.tolist() == by_key[it.key] for it in rebuilt._items)
    other_seed = PreferenceDataset(capacity=3000, n_members=3, seed=4)
    for i in range(20):
        other_seed.add(o[i, 0], a[i, 0], o[i, 1], a[i, 1], "left", key=i)
    assert [it.weights.tolist() for it in other_seed._items] != [by_key[i] for i in range(20)]
    unkeyed = [PreferenceDataset(capacity=3000, n_members=3, seed=3) for _ in range(2)]
    for d in unkeyed:
        for i in range(20):
            d.add(o[i, 0], a[i, 0], o[i, 1], a[i, 1], "equal")
    assert [it.weights.tolist() for it in unkeyed[0]._items] == [it.weights.tolist() for it in unkeyed[1]._items]
    np.testing.assert_array_equal(unkeyed[0]._items[0].mu, [0.5, 0.5])


# --- config and bad input -------------------------------------------------------------------


def test_from_config_uses_the_papers_atari_settings():
    cfg = resolve(TrainConfig(env_id="ALE/Enduro-v5"))
    ens = RewardEnsemble.from_config(cfg, ATARI, 9)
    assert (ens.n_members, ens.reward_std, ens.dropout, ens.arch) == (3, 0.05, 0.5, "cnn")
    assert ens.batch_size == cfg.reward_batch and ens.lr == cfg.reward_lr and ens.l2_rule == L2Rule()
    with pytest.raises(ValueError, match="resolved"):
        RewardEnsemble.from_config(TrainConfig(), ATARI, 9)
    vec = RewardEnsemble.from_config(resolve(TrainConfig(env_id="CartPole-v1")), (4,), 2)
    assert (vec.arch, vec.reward_std, vec.dropout) == ("mlp", 1.0, 0.0)
    # adaptive_l2=False is the config's 'no regularisation' ablation: no L2 at all
    off = RewardEnsemble.from_config(resolve(TrainConfig(env_id="CartPole-v1", adaptive_l2=False)), (4,), 2)
    assert off.l2.tolist() == [0.0, 0.0, 0.0] and not off.l2_rule.adaptive
    ds = PreferenceDataset.from_config(cfg)
    assert (ds.capacity, ds.n_members) == (3000, 3)


def test_bad_input_names_expected_and_got():
    cnn = RewardEnsemble(ATARI, 6)
    with pytest.raises(ValueError, match=r"expected shape \(B, 4, 84, 84\), got \(2, 84, 84, 4\)"):
        cnn.predict(np.zeros((2, 84, 84, 4), np.uint8))
    with pytest.raises(ValueError, match="expected dtype uint8 frames, got float32"):
        cnn.predict(np.zeros((2,) + ATARI, np.float32))
    mlp = vector_ensemble()
    with pytest.raises(ValueError, match=r"expected shape \(B, 4\), got \(3, 5\)"):
        mlp.predict(np.zeros((3, 5)), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="takes actions"):
        mlp.predict(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"Discrete actions in \[0, 3\), got values in \[0, 3\]"):
        mlp.predict(np.zeros((3, 4)), np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="integer dtype"):
        mlp.predict(np.zeros((3, 4)), np.zeros(3, np.float32))
    box = RewardEnsemble((3,), (2,))
    with pytest.raises(ValueError, match=r"expected shape \(4, 2\) \(Box actions\), got \(4, 1\)"):
        box.predict(np.zeros((4, 3)), np.zeros((4, 1)))
    ds = PreferenceDataset(10, 3)
    o, a = np.zeros((5, 4), np.float32), np.zeros(5, np.int64)
    ds.add(o, a, o, a, "left")
    with pytest.raises(ValueError, match="segment length: expected 5, got 6"):
        ds.add(np.zeros((6, 4), np.float32), np.zeros(6, np.int64), o, a, "left")
    with pytest.raises(ValueError, match=r"expected shape \(T, \*\(4,\)\) dtype float32, got shape \(5, 3\)"):
        ds.add(np.zeros((5, 3), np.float32), a, o, a, "left")
    with pytest.raises(ValueError, match="mu must be a distribution"):
        ds.add(o, a, o, a, (0.7, 0.7))
    with pytest.raises(ValueError, match="not one of"):
        ds.add(o, a, o, a, "both")
    with pytest.raises(ValueError, match="obs shape"):
        RewardEnsemble((5,), 3).train(ds, 1)
    with pytest.raises(ValueError, match="unsupported action space"):
        RewardEnsemble((4,), "discrete")


# --- bf16 conv stack -------------------------------------------------------------------------


def test_bf16_convs_match_float32_and_train_float32_masters():
    """Same weights, convs in bf16: outputs and gradients follow float32 closely; the
    parameters (and so Adam and the checkpoints) stay float32."""
    torch.manual_seed(0)
    f32 = FusedCNN(3, ATARI, dropout=0.0)
    _randomise_bn(f32)
    b16 = FusedCNN(3, ATARI, dropout=0.0, conv_dtype=torch.bfloat16)
    b16.load_state_dict(f32.state_dict())
    x = torch.randint(0, 256, (3, 96) + ATARI, dtype=torch.uint8)
    for train in (False, True):
        a, b = f32.forward_members(x, training=train), b16.forward_members(x, training=train)
        assert b.dtype == torch.float32
        scale = a.std().item()
        assert (a - b).abs().max().item() < 0.05 * scale
        assert np.corrcoef(a.detach().flatten(), b.detach().flatten())[0, 1] > 0.999
    grads = []
    for net in (f32, b16):
        net.zero_grad()
        net.forward_members(x, training=True).pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert all(p.dtype == torch.float32 for p in b16.parameters())
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item() > 0.99
    with pytest.raises(ValueError, match="conv_dtype"):
        FusedCNN(3, ATARI, conv_dtype=torch.float16)
    with pytest.raises(ValueError, match="conv_dtype"):
        RewardEnsemble(ATARI, 6, conv_dtype="half")


def _patch_task(rng, n, t=2):
    """Atari-shaped frames; the true reward of a state is the brightness of one 21x21 patch of
    its newest frame (the rest is noise). Rational labels on decisive pairs."""
    frames = rng.integers(0, 128, size=(n, 2, t, 4, 84, 84), dtype=np.uint8)
    level = rng.integers(0, 128, size=(n, 2, t), dtype=np.uint8)
    frames[..., 3, 10:31, 40:61] += level[..., None, None]
    ret = level.astype(np.int64).sum(-1)
    return frames, ret


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                    reason="this CPU has no native bf16 (AVX512-BF16/AMX): bf16 convs would be emulated, too slow here")
def test_bf16_learns_a_cnn_reward_as_well_as_float32():
    rng = np.random.default_rng(0)
    frames, ret = _patch_task(rng, 160)
    test_frames, test_ret = _patch_task(rng, 200)
    decisive = test_ret[:, 0] != test_ret[:, 1]
    accs = {}
    for dt in ("float32", "bfloat16"):
        ds = PreferenceDataset(capacity=1000, n_members=3, seed=0)
        for i in range(len(frames)):
            answer = "left" if ret[i, 0] > ret[i, 1] else "right" if ret[i, 0] < ret[i, 1] else "equal"
            no_actions = np.zeros(frames.shape[2], dtype=np.int64)  # the CNN does not use them
            ds.add(frames[i, 0], no_actions, frames[i, 1], no_actions, answer, key=i)
        ens = RewardEnsemble(ATARI, 6, dropout=0.5, reward_std=0.05, lr=1e-3, conv_dtype=dt, seed=0)
        Plateau(None, 12, 12).run(ens, ds)
        r = segment_returns(ens, test_frames.reshape(-1, 2, *ATARI)).mean(0).reshape(-1, 2)
        accs[dt] = ((r[:, 0] > r[:, 1]) == (test_ret[:, 0] > test_ret[:, 1]))[decisive].mean()
    assert accs["float32"] >= 0.8, accs
    assert accs["bfloat16"] >= accs["float32"] - 0.05, accs
