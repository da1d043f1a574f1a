"""Scene sampling invariants (DESIGN.md §3) on hand-built datasets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scene_fixtures import LoggedStrategy, TracingStrategy, make_dataset
from scipy import stats

from usermirrorer.data_pipeline.raw import parse_time
from usermirrorer.data_pipeline.sampling.sampler import (
    SceneConfig,
    SceneSampler,
    build_scene_file,
    causal_popularity,
    eligible_rows,
    interaction_rows,
    iter_causal_popularity,
    popularity_bins,
    sample_scenes,
    sample_train_eval,
)
from usermirrorer.errors import ConfigError

FAST = dict(embedder="hashing")


def _scene_row(ds, record) -> int:
    rows = interaction_rows(ds, [record])
    assert len(rows) >= 1
    return int(rows[0])


@pytest.fixture(scope="module")
def train_scenes(toy, tracing):
    config = SceneConfig(n_samples=2500, min_exposure=2, max_exposure=12, seed=3, **FAST)
    records, report = sample_scenes(toy, config, tracing)
    return records, report


def test_real_item_position_uniform_over_all_k(toy, tracing):
    config = SceneConfig(n_samples=2500, min_exposure=5, max_exposure=5, split="eval", seed=11, **FAST)
    records, _ = sample_scenes(toy, config, tracing)
    assert len(records) == 2500
    positions = np.bincount([r["item_pos"] for r in records], minlength=5)
    assert positions[4] > 0, "the last slot must be able to hold the real item"
    assert stats.chisquare(positions).pvalue > 0.001


def test_position_uniform_for_every_k(train_scenes):
    records, _ = train_scenes
    chi2, dof = 0.0, 0
    for k in range(2, 13):
        pos = [r["item_pos"] for r in records if r["choice_cnt"] == k]
        counts = np.bincount(pos, minlength=k)
        expected = len(pos) / k
        chi2 += float(((counts - expected) ** 2 / expected).sum())
        dof += k - 1
        assert counts[k - 1] > 0
    assert stats.chi2.sf(chi2, dof) > 0.001


def test_exposures_respect_time_rules(toy, train_scenes):
    records, _ = train_scenes
    release = np.array([f["release"] for f in toy.item_features])
    for record in records:
        row = _scene_row(toy, record)
        user, t = int(toy.inter_user[row]), int(toy.inter_time[row])
        rows = toy.user_rows(user)
        seen = set(toy.inter_item[rows][toy.inter_time[rows] <= t].tolist())
        shown = [toy.item_index[i] for i in record["impression_list"]]
        real = toy.item_index[record["item_id"]]
        assert shown[record["item_pos"]] == real
        others = shown[: record["item_pos"]] + shown[record["item_pos"] + 1:]
        assert real not in others
        assert not seen.intersection(others), "an option the user already interacted with"
        assert (release[others] <= t).all(), "an option released after the scene time"


def test_no_duplicates_and_k_in_bounds(train_scenes):
    records, report = train_scenes
    sizes = set()
    for record in records:
        k = record["choice_cnt"]
        sizes.add(k)
        assert 2 <= k <= 12
        assert len(record["impression_list"]) == k == len(record["text"]["action_list"])
        assert len(set(record["impression_list"])) == k
        assert 0 <= record["item_pos"] < k
    assert sizes == set(range(2, 13))
    assert sum(report.exposure_sizes.values()) == len(records)


def test_history_strictly_before_scene_time(toy, train_scenes):
    records, _ = train_scenes
    lengths = set()
    for record in records:
        t = parse_time(record["timestamp"])
        row = _scene_row(toy, record)
        before = toy.rows_before(int(toy.inter_user[row]), t)
        expected = [f"{toy.item_ids[toy.inter_item[r]]}@{toy.inter_time[r]}" for r in range(before.start, before.stop)]
        lines = record["text"]["history"].split("\n")
        assert all(int(line.split("@")[1]) < t for line in lines)
        assert lines == expected[-len(lines):], "history must be the latest items before t, oldest first"
        assert 2 <= len(lines) <= 10 or len(lines) == len(expected)
        lengths.add(len(lines))
    assert len(lengths) > 3, "train histories are randomly truncated"


def test_eval_history_is_fixed(toy, tracing):
    config = SceneConfig(n_samples=300, split="eval", seed=1, **FAST)
    records, _ = sample_scenes(toy, config, tracing)
    for record in records:
        row = _scene_row(toy, record)
        before = toy.rows_before(int(toy.inter_user[row]), int(toy.inter_time[row]))
        n_lines = len(record["text"]["history"].split("\n"))
        assert n_lines == min(10, before.stop - before.start)


def test_longest_history_gives_train_scenes_the_eval_length_and_nothing_else_changes(toy, tracing, train_scenes):
    uniform, _ = train_scenes
    config = SceneConfig(n_samples=2500, min_exposure=2, max_exposure=12, seed=3, history_length="longest", **FAST)
    longest, _ = sample_scenes(toy, config, tracing)
    assert len(longest) == len(uniform)
    shorter = 0
    for a, b in zip(uniform, longest, strict=True):
        assert {k: v for k, v in a.items() if k != "text"} == {k: v for k, v in b.items() if k != "text"}
        assert {k: v for k, v in a["text"].items() if k != "history"} == {
            k: v for k, v in b["text"].items() if k != "history"}
        row = _scene_row(toy, b)
        before = toy.rows_before(int(toy.inter_user[row]), int(toy.inter_time[row]))
        lines, short = b["text"]["history"].split("\n"), a["text"]["history"].split("\n")
        assert len(lines) == min(10, before.stop - before.start)
        assert lines[-len(short):] == short, "the uniform history is the tail of the longest"
        shorter += len(short) < len(lines)
    assert shorter > len(uniform) // 4, "the uniform rule does truncate, so the two differ"
    with pytest.raises(ConfigError, match="history_length must be one of"):
        SceneConfig(n_samples=1, history_length="all").validate()


def test_candidates_need_min_history(toy):
    rows = eligible_rows(toy, 3)
    for row in rows[:: max(1, len(rows) // 500)]:
        before = toy.rows_before(int(toy.inter_user[row]), int(toy.inter_time[row]))
        assert before.stop - before.start >= 3
    excluded = np.setdiff1d(np.arange(toy.n_interactions), rows)
    for row in excluded[:200]:
        before = toy.rows_before(int(toy.inter_user[row]), int(toy.inter_time[row]))
        assert before.stop - before.start < 3


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    from usermirrorer.data_pipeline.raw import dataset_records, write_raws

    small = make_dataset(n_users=80, n_items=150, n_interactions=3000, seed=12)
    write_raws(tmp_path / "a", "toy", *dataset_records(small))
    write_raws(tmp_path / "b", "toy", *dataset_records(small))
    config = SceneConfig(n_samples=300, min_exposure=2, max_exposure=8, seed=5, **FAST)
    paths = []
    for project, seed in (("a", 5), ("b", 5), ("a", 6)):
        report = build_scene_file(tmp_path / project, "toy", replace(config, seed=seed),
                                  output=tmp_path / f"{project}{seed}.jsonl")
        paths.append(report.path)
    data = [open(p, "rb").read() for p in paths]
    assert data[0] == data[1]
    assert data[0] != data[2]
    # The second project computed its own embeddings; a third run reuses the cache, same bytes.
    report = build_scene_file(tmp_path / "a", "toy", config, output=tmp_path / "again.jsonl")
    assert open(report.path, "rb").read() == data[0]


def test_train_and_eval_are_disjoint(tmp_path, toy):
    from usermirrorer.data_pipeline.jsonl import read_jsonl
    from usermirrorer.data_pipeline.raw import dataset_records, write_raws

    write_raws(tmp_path, "toy", *dataset_records(toy))
    ev = build_scene_file(tmp_path, "toy", SceneConfig(n_samples=100, split="eval", **FAST))
    tr = build_scene_file(tmp_path, "toy", SceneConfig(n_samples=800, min_exposure=2, max_exposure=6, **FAST))
    eval_records, train_records = read_jsonl(ev.path), read_jsonl(tr.path)
    key = lambda r: (r["user_id"], r["item_id"], r["timestamp"])  # noqa: E731
    assert not {key(r) for r in eval_records} & {key(r) for r in train_records}
    assert not {r["user_id"] for r in eval_records} & {r["user_id"] for r in train_records}
    assert tr.excluded_users == len({r["user_id"] for r in eval_records})
    # Sharing users still never shares an interaction.
    shared = build_scene_file(tmp_path, "toy", SceneConfig(n_samples=3000, min_exposure=2, max_exposure=6, **FAST),
                              share_users=True, output=tmp_path / "shared.jsonl")
    shared_records = read_jsonl(shared.path)
    assert {r["user_id"] for r in eval_records} & {r["user_id"] for r in shared_records}
    assert not {key(r) for r in eval_records} & {key(r) for r in shared_records}


def test_sample_train_eval_in_memory(toy, tracing):
    train, evals = sample_train_eval(
        toy, SceneConfig(n_samples=300, min_exposure=2, max_exposure=4, **FAST),
        SceneConfig(n_samples=50, split="eval", **FAST), tracing)
    assert len(train) == 300 and len(evals) == 50
    assert not {r["user_id"] for r in train} & {r["user_id"] for r in evals}


def test_causal_popularity_counts_strictly_before(toy):
    rng = np.random.default_rng(0)
    times = np.concatenate([rng.choice(toy.inter_time, 40), [toy.inter_time.min(), toy.inter_time.max() + 1]])
    counts = causal_popularity(toy, times, chunk_size=7)
    for j, t in enumerate(times):
        expected = np.bincount(toy.inter_item[toy.inter_time < t], minlength=toy.n_items)
        assert np.array_equal(counts[j], expected)
    seen = np.concatenate([idx for idx, _ in iter_causal_popularity(toy, times, chunk_size=5)])
    assert sorted(seen.tolist()) == list(range(len(times)))


def test_popularity_matched_negatives_match(tracing):
    ds = make_dataset(n_users=200, n_items=600, n_interactions=12000, skew=1.2, seed=4)
    k = 5
    config = SceneConfig(n_samples=800, min_exposure=k, max_exposure=k, split="eval",
                         negatives="popularity-matched", **FAST)
    matched, _ = sample_scenes(ds, config, tracing)
    standard, _ = sample_scenes(ds, replace(config, negatives="standard"), tracing)
    release = tracing.release_times(ds)

    def popularity_view(records):
        """Per scene: rank of the real item by causal popularity among the options (0 = most
        popular), whether the scene is interior (K-1 available items strictly more and strictly
        less popular than the real item), and the share of options in the real item's decile."""
        times = np.array([parse_time(r["timestamp"]) for r in records])
        counts = causal_popularity(ds, times)
        ranks, interior, same_decile = [], [], []
        for j, record in enumerate(records):
            shown = np.array([ds.item_index[i] for i in record["impression_list"]])
            real = shown[record["item_pos"]]
            c = counts[j, shown].astype(float) + np.random.default_rng(j).random(len(shown)) * 0.5
            ranks.append(int((c > c[record["item_pos"]]).sum()))
            user = int(ds.inter_user[_scene_row(ds, record)])
            avail = release <= times[j]
            rows = ds.user_rows(user)
            avail[ds.inter_item[rows][ds.inter_time[rows] <= times[j]]] = False
            avail[real] = False
            more = int((avail & (counts[j] > counts[j, real])).sum())
            less = int((avail & (counts[j] < counts[j, real])).sum())
            interior.append(more >= k - 1 and less >= k - 1)
            avail[real] = True
            labels, _ = popularity_bins(counts[j:j + 1], avail[None, :], 10)
            same_decile.append(np.mean(labels[0, shown] == labels[0, real]))
        return np.array(ranks), np.array(interior), float(np.mean(same_decile))

    ranks, interior, decile = popularity_view(matched)
    _, _, decile_standard = popularity_view(standard)
    assert decile > 0.9, "other options must sit in the real item's causal-popularity decile"
    assert decile > decile_standard + 0.3
    assert interior.sum() > 400
    # Where both sides have room, the real item's popularity rank among the options is uniform:
    # "pick the most (or least) popular option" is right 1/K of the time.
    counts = np.bincount(ranks[interior], minlength=k)
    assert stats.chisquare(counts).pvalue > 0.001, counts
    positions = np.bincount([r["item_pos"] for r in matched], minlength=k)
    assert stats.chisquare(positions).pvalue > 0.001


def test_logged_exposures_are_replayed():
    ds = make_dataset(n_users=80, n_items=200, n_interactions=3000, impressions=9, name="logged", seed=2)
    strategy = LoggedStrategy()
    records, report = sample_scenes(ds, SceneConfig(n_samples=1500, min_exposure=2, max_exposure=6, **FAST), strategy)
    assert report.scorers == []
    for record in records:
        assert record["impression_list"][record["item_pos"]] == record["item_id"]
        others = [i for i in record["impression_list"] if i != record["item_id"]]
        # One of the interaction's rows (the same user, item and hour may repeat) logged these
        # options, in this order.
        logged = [ds.behavior["impression"][row] for row in interaction_rows(ds, [record])]
        assert any(set(record["impression_list"]) <= set(log) and others == [i for i in log if i in set(others)]
                   for log in logged)
    positions = [r["item_pos"] for r in records if r["choice_cnt"] == 6]
    assert stats.chisquare(np.bincount(positions, minlength=6)).pvalue > 0.001


def test_too_few_items_shrinks_or_drops(tracing):
    ds = make_dataset(n_users=20, n_items=12, n_interactions=400, seed=3, with_release=False)
    records, report = sample_scenes(ds, SceneConfig(n_samples=200, min_exposure=2, max_exposure=12, **FAST),
                                    TracingStrategy())
    for record in records:
        assert len(set(record["impression_list"])) == record["choice_cnt"] >= 2
    assert report.written + sum(report.dropped.values()) >= 200 or report.candidates < 200


def test_config_errors(toy):
    with pytest.raises(ConfigError, match="26"):
        SceneConfig(n_samples=10, min_exposure=5, max_exposure=27).validate()
    with pytest.raises(ConfigError, match="tokenizer"):
        SceneConfig(n_samples=10, max_tokens=100).validate()
    with pytest.raises(ConfigError, match="unknown scorer"):
        SceneSampler(toy, SceneConfig(n_samples=10, scorers=("nope",), **FAST))


def test_chunked_scoring_matches_memory_bound(toy, tracing):
    small = SceneSampler(toy, SceneConfig(n_samples=10, chunk_bytes=2**16, **FAST), tracing)
    assert small.chunk * toy.n_items * 4 <= 2**16
    records, _ = sample_scenes(toy, SceneConfig(n_samples=120, chunk_bytes=2**16, **FAST), tracing, sampler=small)
    assert len(records) == 120


def test_successive_draws_match_sampling_without_replacement():
    """Ranked multinomial lists: the joint law of the first two draws equals successive sampling
    (w_i / W) * (w_j / (W - w_i)) over the valid items, including when heavy items are invalid."""
    from itertools import permutations

    from usermirrorer.data_pipeline.sampling.draws import successive_draws as _successive_draws

    weights = np.array([8.0, 4.0, 2.0, 1.0, 1.0, 0.5])
    valid = np.ones((60000, 6), dtype=bool)
    valid[:, 0] = False  # the heaviest item may not be shown
    items, ok = _successive_draws(np.log(weights), valid, 2, np.random.default_rng(0))
    assert ok.all()
    w = weights.copy()
    w[0] = 0.0
    pairs = list(permutations(range(1, 6), 2))
    expected = np.array([w[i] / w.sum() * w[j] / (w.sum() - w[i]) for i, j in pairs])
    index = {p: n for n, p in enumerate(pairs)}
    observed = np.bincount([index[(a, b)] for a, b in items.tolist()], minlength=len(pairs))
    assert stats.chisquare(observed, expected * len(items)).pvalue > 0.001
