import sqlite3
import threading

import numpy as np
import pytest

from rlhp_core.label_store import LabelStore, LabelStoreError
from rlhp_core.segments import Query
from tests.helpers.segments import make_segment


def _queries(rng, n, frames=False):
    return [Query(f"q{i}", make_segment(rng, frames=frames), make_segment(rng, frames=frames)) for i in range(n)]


def test_round_trip_and_answers(tmp_path, rng):
    store = LabelStore(tmp_path / "l.sqlite", env_id="CartPole-v1", obs_shape=(3,))
    qs = _queries(rng, 3, frames=True)
    store.add_queries(qs, env_step=7)
    back = store.query("q1", with_frames=True)
    np.testing.assert_array_equal(back.left.obs, qs[1].left.obs)
    np.testing.assert_array_equal(back.right.frames, qs[1].right.frames)
    assert store.pending_query_ids() == ["q0", "q1", "q2"]
    aid = store.add_answer("q1", "left", labeler="oracle:rational", labeler_params={"beta": "inf"})
    assert [a.query_id for a in store.current_answers()] == ["q1"]
    assert store.current_answers()[0].labeler_params == {"beta": "inf"}
    assert store.counts() == {"left": 1, "right": 0, "equal": 0, "incomparable": 0, "pending": 2}
    with pytest.raises(LabelStoreError, match="already answered"):
        store.add_answer("q1", "right", labeler="x")
    store.retract(aid)
    assert store.current_answers() == []
    assert len(store.all_answers()) == 1 and store.all_answers()[0].retracted_at is not None
    assert "q1" in store.pending_query_ids()


def test_bad_answers_and_ids(tmp_path, rng):
    store = LabelStore(tmp_path / "l.sqlite", env_id="CartPole-v1", obs_shape=(3,))
    store.add_queries(_queries(rng, 1))
    with pytest.raises(ValueError, match="'sideways' is not one of left, right, equal, incomparable"):
        store.add_answer("q0", "sideways", labeler="x")
    with pytest.raises(KeyError, match="no query with id 'nope'"):
        store.add_answer("nope", "left", labeler="x")
    assert store.all_answers() == []


def test_idempotent_submission(tmp_path, rng):
    store = LabelStore(tmp_path / "l.sqlite", env_id="E", obs_shape=(3,))
    store.add_queries(_queries(rng, 1))
    a = store.add_answer("q0", "equal", labeler="human", submission_id="s-1")
    b = store.add_answer("q0", "equal", labeler="human", submission_id="s-1")
    assert a == b and len(store.all_answers()) == 1


def test_other_env_refused_and_nothing_lost(tmp_path, rng):
    path = tmp_path / "l.sqlite"
    store = LabelStore(path, env_id="CartPole-v1", obs_shape=(3,))
    store.add_queries(_queries(rng, 2))
    store.add_answer("q0", "left", labeler="x")
    store.close()
    with pytest.raises(LabelStoreError, match="holds labels for env 'CartPole-v1'; it cannot be used for env 'Pendulum-v1'"):
        LabelStore(path, env_id="Pendulum-v1", obs_shape=(3,))
    with pytest.raises(LabelStoreError, match=r"observations of shape \(3,\)"):
        LabelStore(path, env_id="CartPole-v1", obs_shape=(4,))
    again = LabelStore(path, env_id="CartPole-v1", obs_shape=(3,))
    assert again.num_queries() == 2 and len(again.current_answers()) == 1


def test_wrong_shape_queries_write_nothing(tmp_path, rng):
    store = LabelStore(tmp_path / "l.sqlite", env_id="E", obs_shape=(3,))
    bad = [Query("ok", make_segment(rng), make_segment(rng)), Query("bad", make_segment(rng, obs_shape=(2,)), make_segment(rng))]
    with pytest.raises(LabelStoreError, match=r"segment observations have shape \(2,\)"):
        store.add_queries(bad)
    assert store.num_queries() == 0


def test_lease_gives_each_pair_to_one_labeler(tmp_path, rng):
    store = LabelStore(tmp_path / "l.sqlite", env_id="E", obs_shape=(3,))
    store.add_queries(_queries(rng, 2))
    a = store.lease_next("alice")
    b = store.lease_next("bob")
    assert {a, b} == {"q0", "q1"}
    assert store.lease_next("carol") is None
    assert store.lease_next("alice") == a  # a reload gets the same pair back
    store.add_answer(a, "left", labeler="alice")
    assert store.lease_next("alice") is None


def test_answers_from_threads_all_stored(tmp_path, rng):
    store = LabelStore(tmp_path / "l.sqlite", env_id="E", obs_shape=(3,))
    store.add_queries(_queries(rng, 40))

    def answer(ids):
        for q in ids:
            store.add_answer(q, "right", labeler=threading.current_thread().name)

    ids = [f"q{i}" for i in range(40)]
    threads = [threading.Thread(target=answer, args=(ids[k::4],)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    con = sqlite3.connect(tmp_path / "l.sqlite")
    assert con.execute("SELECT COUNT(DISTINCT query_id) FROM answers").fetchone()[0] == 40


def test_import_and_export(tmp_path, rng):
    src = LabelStore(tmp_path / "a.sqlite", env_id="E", obs_shape=(3,))
    src.add_queries(_queries(rng, 3))
    src.add_answer("q0", "left", labeler="x")
    src.add_answer("q2", "incomparable", labeler="y")
    dst = LabelStore(tmp_path / "b.sqlite", env_id="E", obs_shape=(3,))
    assert dst.import_from(src) == 2
    assert dst.import_from(src) == 0
    assert sorted(a.answer for a in dst.current_answers()) == ["incomparable", "left"]
    other = LabelStore(tmp_path / "c.sqlite", env_id="F", obs_shape=(3,))
    with pytest.raises(LabelStoreError, match="cannot seed labels for env 'F'"):
        other.import_from(src)
    assert dst.export_csv(tmp_path / "out.csv") == 2
    assert (tmp_path / "out.csv").read_text().splitlines()[0].startswith("answer_id,query_id,answer,labeler")


def test_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LabelStore(tmp_path / "missing.sqlite")
