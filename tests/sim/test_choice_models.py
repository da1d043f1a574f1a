"""The one choice-model factory: every kind it builds, what it rejects, and who calls it."""

from __future__ import annotations

import numpy as np
import pytest

import usermirrorer.envs as envs
from usermirrorer.data_pipeline.raw import format_time
from usermirrorer.envs.resources import clear_caches, load_choice_model
from usermirrorer.errors import ConfigError
from usermirrorer.fidelity.runner import ModelSpec, build_choice_model
from usermirrorer.sim import SimOptions, UserSimulator
from usermirrorer.sim.baselines import (
    CollaborativeChoiceModel,
    MostPopularChooser,
    PopularityChoiceModel,
    RandomChoiceModel,
)
from usermirrorer.sim.choice_models import (
    BASELINE_CHOICE_MODELS,
    ChoiceModel,
    as_sim_options,
    make_choice_model,
)


def scene(ds, items, t):
    return {"user_id": "u0", "timestamp": format_time(t), "impression_list": [str(ds.item_ids[i]) for i in items],
            "text": {"profile": "", "history": "", "action_list": [f"item {i}" for i in items]}}


@pytest.mark.parametrize("name, cls", [("random", RandomChoiceModel), ("popularity", PopularityChoiceModel),
                                       ("most-popular", MostPopularChooser),
                                       ("collaborative", CollaborativeChoiceModel)])
def test_builds_every_non_llm_kind(small_ds, name, cls):
    options = {"dim": 8} if name == "collaborative" else None
    model = make_choice_model(name, small_ds, options=options)
    assert type(model) is cls and isinstance(model, ChoiceModel)
    t = int(small_ds.inter_time.max()) + 1
    probs = model.choice_probs([scene(small_ds, [0, 1, 2], t)])[0].probs
    assert probs.shape == (3,) and np.isclose(probs.sum(), 1)


def test_most_popular_puts_everything_on_the_top_count(small_ds):
    model = make_choice_model("most-popular", small_ds)
    t = int(np.median(small_ds.inter_time))
    counts = make_choice_model("popularity", small_ds).counts_before(t)
    items = np.argsort(counts, kind="stable")[[0, len(counts) // 2, -1]]
    assert model.choice_probs(scene(small_ds, items, t)).probs.tolist() == [0.0, 0.0, 1.0]
    assert repr(model) == "MostPopularChooser(dataset='toy')"


def test_builds_an_llm_and_passes_options_through(tiny_model_dir):
    model = make_choice_model(str(tiny_model_dir), options={"mode": "decision", "n_thoughts": 2},
                              backend_kwargs={"dtype": "float32"})
    assert isinstance(model, UserSimulator) and model.options.mode == "decision" and model.options.n_thoughts == 2
    assert model.model == str(tiny_model_dir)


def test_a_ready_model_is_returned_as_is_and_bad_input_is_refused(small_ds, fake_model):
    assert make_choice_model(fake_model) is fake_model
    with pytest.raises(ConfigError, match="choice_probs"):
        make_choice_model(object())
    with pytest.raises(ConfigError, match="pass the dataset"):
        make_choice_model("popularity")
    with pytest.raises(ConfigError, match="temperature"):
        make_choice_model("popularity", small_ds, options={"temperature": 0})
    with pytest.raises(ConfigError, match="SimOptions or a dict"):
        as_sim_options(3)
    assert as_sim_options(None) == SimOptions() and as_sim_options({"mode": "decision"}).mode == "decision"


def test_the_env_and_the_fidelity_rows_build_through_the_factory(small_ds):
    assert envs.ChoiceModel is ChoiceModel and envs.BASELINE_CHOICE_MODELS == BASELINE_CHOICE_MODELS
    assert BASELINE_CHOICE_MODELS == ("random", "popularity", "collaborative", "cooccurrence", "mnl")
    clear_caches()
    first = load_choice_model("popularity", small_ds)
    assert type(first) is PopularityChoiceModel and load_choice_model("popularity", small_ds) is first  # cached
    assert type(build_choice_model(ModelSpec(label="m", kind="most-popular"), small_ds)) is MostPopularChooser
    fit = np.arange(small_ds.n_interactions // 2)
    collab = build_choice_model(ModelSpec(label="c", kind="collaborative"), small_ds, fit_rows=fit)
    direct = make_choice_model("collaborative", small_ds, fit_rows=fit)
    assert np.array_equal(collab.embedding, direct.embedding)
    clear_caches()
