"""The one evaluation loop: the same numbers as the two loops it replaced, batching, budget, checks."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from usermirrorer.data_pipeline.raw import format_time
from usermirrorer.errors import DataError
from usermirrorer.fidelity.stats import score_run
from usermirrorer.sim import ChoiceResult, metrics
from usermirrorer.sim.choice_models import make_choice_model
from usermirrorer.sim.evaluation import evaluate, sample_hits, scene_rng


def logged_scenes(ds, n=23):
    """Scenes of the real log: K in 3..6, the real item at a varying position, two datasets."""
    rng = np.random.default_rng(1)
    out = []
    for row in rng.choice(ds.n_interactions, n, replace=False):
        k = 3 + int(row) % 4
        others = [int(i) for i in rng.choice(np.setdiff1d(np.arange(ds.n_items), [ds.inter_item[row]]), k - 1,
                                             replace=False)]
        pos = int(row) % k
        items = others[:pos] + [int(ds.inter_item[row])] + others[pos:]
        out.append({"dataset": "a" if row % 3 else "b", "scene_id": f"s{row}", "user_id": str(ds.user_ids[ds.inter_user[row]]),
                    "item_id": str(ds.item_ids[items[pos]]), "timestamp": format_time(int(ds.inter_time[row])),
                    "impression_list": [str(ds.item_ids[i]) for i in items], "item_pos": pos,
                    "text": {"profile": "", "history": "", "action_list": [f"item {i}" for i in items]}})
    return out


class Recorder:
    """Popularity answers; records each call's scene ids and keyword arguments."""

    def __init__(self, ds):
        self.inner = make_choice_model("popularity", ds)
        self.calls = []

    def choice_probs(self, scenes, **kwargs):
        self.calls.append(([s["scene_id"] for s in scenes], kwargs))
        return self.inner.choice_probs(scenes)


def test_per_scene_sampling_gives_the_eval_commands_old_numbers(small_ds):
    scenes = logged_scenes(small_ds)
    model = make_choice_model("popularity", small_ds)
    seed, repeats, batch = 5, 9, 4
    run = evaluate(scenes, lambda dataset: model, repeats=repeats, seed=seed, batch_size=batch,
                   groups=[s["dataset"] for s in scenes])
    # the old `usermirrorer eval` loop: one generator per scene, seeded by (seed, crc32(scene id))
    old = {}
    for s in scenes:
        probs = model.choice_probs(s).probs
        rng = np.random.default_rng([seed, zlib.crc32(s["scene_id"].encode("utf-8"))])
        old[s["scene_id"]] = (probs, int(metrics.sampled_hits([probs], [s["item_pos"]], repeats, rng)[0]))
    assert run.scene_ids == [s["scene_id"] for s in scenes] and run.complete
    for sid, p, h in zip(run.scene_ids, run.probs, run.hits):
        assert np.array_equal(p, old[sid][0]) and h == old[sid][1]
    groups = [s["dataset"] for s in scenes]
    expected = metrics.summarize_by_group(groups, [old[s["scene_id"]][0] for s in scenes],
                                          [s["item_pos"] for s in scenes], [old[s["scene_id"]][1] for s in scenes], repeats)
    got = run.summary()
    assert list(got) == list(expected) == ["a", "b", "all"]
    for name in expected:
        assert got[name].to_dict() == expected[name].to_dict()
    first = scenes[0]["scene_id"]
    assert sample_hits([old[first][0]], [scenes[0]["item_pos"]], repeats, seed, [first]).tolist() == [run.hits[0]]
    assert scene_rng(seed, "x").random() == np.random.default_rng([seed, zlib.crc32(b"x")]).random()


def test_shared_sampling_gives_the_fidelity_tables_old_numbers(small_ds):
    scenes = [s for s in logged_scenes(small_ds, 40) if len(s["text"]["action_list"]) == 5]
    model = make_choice_model("popularity", small_ds)
    run = evaluate(scenes, model, repeats=10, seed=3, batch_size=6, sampling="shared")
    probs = np.array([model.choice_probs(s).probs for s in scenes])
    targets = np.array([s["item_pos"] for s in scenes])
    # the old fidelity numbers: one generator for the whole row
    old_hits = metrics.sampled_hits(list(probs), targets, 10, np.random.default_rng(3))
    assert np.array_equal(run.hits, old_hits)
    row = score_run(probs, targets, seconds=1.0, repeats=10, seed=3)
    summary = run.summary()["all"]
    assert (summary.accuracy, summary.ci_low, summary.log_loss, summary.ece) == (row.accuracy, row.ci_low,
                                                                                 row.log_loss, row.ece)


def test_batches_stay_in_their_group_and_get_per_batch_arguments(small_ds):
    scenes = logged_scenes(small_ds, 11)
    groups = [s["dataset"] for s in scenes]
    assert set(groups) == {"a", "b"}
    rec = Recorder(small_ds)
    seen = []
    evaluate(scenes, rec, repeats=2, batch_size=3, groups=groups,
             choice_kwargs=lambda start: {"mode": "direct", "seed": 100 + start},
             on_batch=lambda batch: seen.append([(s.scene_id, s.hits is not None) for s in batch]))
    order = [s["scene_id"] for g in dict.fromkeys(groups) for s, sg in zip(scenes, groups) if sg == g]
    assert [sid for ids, _ in rec.calls for sid in ids] == order
    for ids, kwargs in rec.calls:
        assert len({groups[[s["scene_id"] for s in scenes].index(i)] for i in ids}) == 1 and len(ids) <= 3
    sizes = [groups.count(g) for g in dict.fromkeys(groups)]
    assert [kwargs["seed"] - 100 for _, kwargs in rec.calls] == [b for n in sizes for b in range(0, n, 3)]
    assert all(ok for batch in seen for _, ok in batch)  # per-scene hits are drawn before on_batch


def test_budget_stops_between_batches_and_bad_distributions_are_refused(small_ds):
    scenes = logged_scenes(small_ds, 8)
    run = evaluate(scenes, Recorder(small_ds), repeats=None, batch_size=2, budget_seconds=0.0)
    assert not run.complete and run.scored == []

    class Bad:
        def choice_probs(self, batch):
            return [ChoiceResult(probs=np.full(2, 0.5)) for _ in batch]

    with pytest.raises(DataError, match="row 'bad' returned"):
        evaluate(scenes, Bad(), repeats=None, label="row 'bad'")
