"""The whole fidelity run on a small synthetic log with the tiny random model.

Checks the plumbing the committed table depends on: every planned row on both variants, the
result files, the paper figures labelled as not ours, the direct-fine-tune row and its
held-out-users guard, resuming from the cache, and the command line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from usermirrorer.errors import ConfigError, DataError
from usermirrorer.fidelity.benchmark import LABEL_COOCCURRENCE, LABEL_MNL, FidelityConfig, parse_extra_model, plan_rows, run_fidelity
from usermirrorer.fidelity.workspace import FidelityPaths, ensure_split, load_benchmark_raws

N_SCENES = 16


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    from usermirrorer.preprocessing.synthetic import write_synthetic

    path = tmp_path_factory.mktemp("fidelity-project")
    write_synthetic(path, n_users=120, n_items=300, n_interactions=4000, seed=1)
    return path


def _config(project: Path, model: Path, **changes) -> FidelityConfig:
    base = dict(project_path=str(project), results_dir=str(project / "results"), dataset="synthetic",
                n_scenes=N_SCENES, eval_user_fraction=0.3, embedder=None, decision_limit=2,
                max_thought_tokens=6, base_model=str(model), progress=False, repeats=5,
                command="pytest fidelity")
    base.update(changes)
    return FidelityConfig(**base)


def _write_manifest(project: Path, model: Path, users: list[str]) -> None:
    manifest = {"base_model": "tiny-random", "model_dir": str(model), "train_scenes": 10, "train_users": len(users),
                "trained_user_ids": users, "negatives": "mixed", "command": "hand-made",
                "stages": [{"stage": "sft", "steps": 3, "batch_size": 2, "examples": 6, "seconds": 1.0}]}
    path = FidelityPaths(project).direct_ft_manifest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def first_run(project, tiny_model_dir):
    ds = load_benchmark_raws(project, "synthetic")
    split = ensure_split(ds, project, seed=0, eval_user_fraction=0.3)
    _write_manifest(project, tiny_model_dir, list(split.train_users[:20]))
    return run_fidelity(_config(project, tiny_model_dir))


def test_every_row_on_both_variants_with_numbers(first_run, project):
    labels = first_run["row_order"]
    assert labels[:4] == ["random (1/K)", "popularity (p ∝ 1+count)", "most popular (argmax count)",
                          "collaborative (spectral)"]
    assert any("base, direct" in lb for lb in labels) and any("base, decision" in lb for lb in labels)
    assert any("direct-FT" in lb for lb in labels)
    # only the pipeline's fine-tune is missing (no --finetuned given), and the table says so
    assert [k for k in first_run["skipped"] if "pipeline fine-tune" not in k] == []
    assert "--finetuned" in next(iter(first_run["skipped"].values()))
    for label in labels:
        for variant in ("standard", "popularity-matched"):
            row = next(r for r in first_run["rows"] if r["label"] == label and r["variant"] == variant)
            s = row["score"]
            expected_n = 2 if row["mode"] == "decision" else N_SCENES
            assert s["n"] == expected_n
            for key in ("accuracy", "ci_low", "ci_high", "log_loss", "ece", "scenes_per_second"):
                assert isinstance(s[key], float) and not math.isnan(s[key]), (label, variant, key)
            assert len(s["letter_share"]) == 5 and sum(s["letter_share"]) == pytest.approx(1.0)
    random_row = next(r for r in first_run["rows"] if r["label"] == "random (1/K)")
    assert random_row["score"]["expected_accuracy"] == pytest.approx(0.2)
    assert random_row["score"]["log_loss"] == pytest.approx(math.log(5))
    # the comparisons answer "does the fine-tune beat its base / the popularity chooser?"
    pairs = {(c["a"], c["b"], c["variant"]) for c in first_run["comparisons"]}
    ft = next(lb for lb in labels if "direct-FT" in lb)
    base = next(lb for lb in labels if "base, direct" in lb)
    for variant in ("standard", "popularity-matched"):
        assert (ft, base, variant) in pairs and (ft, "most popular (argmax count)", variant) in pairs
    assert "direct-FT" in first_run["conclusion"] and "pp [" in first_run["conclusion"]


def test_result_files_and_reference_figures(first_run, project):
    results = project / "results"
    for name in ("fidelity.md", "fidelity.json", "fidelity_accuracy.png", "fidelity_reliability.png"):
        assert (results / name).stat().st_size > 0
    md = (results / "fidelity.md").read_text()
    assert "NOT measured here" in md and "55.0" in md and "42.2" in md and "22.7" in md
    assert "popularity-matched" in md and "decision subset: first 2 scenes" in md
    saved = json.loads((results / "fidelity.json").read_text())
    assert saved["setup"]["scene_checks"]["standard"]["scenes"] == N_SCENES
    assert saved["setup"]["split"]["eval_users"] == 36
    assert (results / "fidelity_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_second_run_resumes_from_the_cache_with_identical_numbers(first_run, project, tiny_model_dir):
    again = run_fidelity(_config(project, tiny_model_dir, results_dir=str(project / "results2")))
    assert again["resumed_rows"] and not any("built" in k for k in again["stage_seconds"])
    header = (project / "results2" / "fidelity.md").read_text().splitlines()[2]
    assert f"{len(again['resumed_rows'])} row-variants read back from the resume cache" in header
    before = {(r["label"], r["variant"]): r["score"] for r in first_run["rows"]}
    for row in again["rows"]:
        old = before[(row["label"], row["variant"])]
        assert row["score"]["accuracy"] == old["accuracy"] and row["score"]["log_loss"] == old["log_loss"]


def test_a_fine_tune_trained_on_eval_users_is_refused(first_run, project, tiny_model_dir):
    split = json.loads(FidelityPaths(project).split.read_text())
    _write_manifest(project, tiny_model_dir, split["eval_users"][:2] + split["train_users"][:3])
    try:
        with pytest.raises(DataError, match="trained on 2 eval user"):
            run_fidelity(_config(project, tiny_model_dir, baselines=("random",), base_modes=()))
    finally:
        _write_manifest(project, tiny_model_dir, split["train_users"][:20])


def test_a_pipeline_model_skips_the_eval_users_it_was_trained_on(first_run, project, tiny_model_dir):
    from usermirrorer.data_pipeline.jsonl import read_jsonl, write_jsonl
    from usermirrorer.fidelity.benchmark import ExtraModel

    scenes = read_jsonl(FidelityPaths(project).scenes("standard"))
    trained = sorted({s["user_id"] for s in scenes})[:3]
    train_file = project / "pipeline_train.jsonl"
    write_jsonl(train_file, [{"user_id": u, "item_id": "x"} for u in trained])
    pipeline = ExtraModel(model=str(tiny_model_dir), label="pipeline FT", role="fine-tuned",
                          trained_on=(str(train_file),))
    out = run_fidelity(_config(project, tiny_model_dir, results_dir=str(project / "results3"), finetuned=(pipeline,),
                               finetuned_decision=True, baselines=("most-popular",), direct_ft=False))
    row = next(r for r in out["rows"] if r["label"] == "pipeline FT, direct" and r["variant"] == "standard")
    left = [s for s in scenes if s["user_id"] not in trained]
    assert row["score"]["n"] == len(left) < N_SCENES
    assert "3 eval users it was trained on left out" in row["note"]
    pairs = [c for c in out["comparisons"] if c["a"] == "pipeline FT, direct"]
    assert pairs and all(c["n"] == len(left) for c in pairs)
    # each mode of the fine-tune is judged against the base in the same mode
    against = {(c["a"], c["b"]) for c in out["comparisons"]}
    base = {r["mode"]: r["label"] for r in out["rows"] if r["role"] == "base LLM"}
    assert ("pipeline FT, direct", base["direct"]) in against
    assert ("pipeline FT, decision", base["decision"]) in against
    assert ("pipeline FT, decision", base["direct"]) not in against
    assert "pipeline FT, decision" in out["conclusion"]


def test_plan_rows_and_extra_model_parsing():
    extra = parse_extra_model("some/folder@decision=My model")
    assert (extra.model, extra.mode, extra.label) == ("some/folder", "decision", "My model")
    assert parse_extra_model("smollm2-135m").mode == "direct"
    with pytest.raises(ConfigError, match="'direct', 'decision', 'likelihood'"):
        parse_extra_model("x@sideways")
    config = FidelityConfig(limit=30, decision_limit=10, extra_models=(extra,))
    rows = plan_rows(config, None)
    by_label = {r.label: r for r in rows}
    assert by_label["SmolLM2-135M-Instruct base, direct"].limit == 30
    assert by_label["SmolLM2-135M-Instruct base, decision"].limit == 10
    assert by_label["My model"].mode == "decision" and by_label["My model"].limit == 10
    with pytest.raises(ConfigError, match="share the label"):
        plan_rows(FidelityConfig(extra_models=(extra, extra)), None)
    debiased = {r.label: r for r in plan_rows(FidelityConfig(llm_limit=40, debias=("reversed", "prior")), None)}
    row = debiased["SmolLM2-135M-Instruct base, direct (debiased: prior)"]
    assert (row.mode, row.debias, row.limit) == ("direct", "prior", 40)
    # a debiased row caches apart from the plain direct row
    plain = debiased["SmolLM2-135M-Instruct base, direct"]
    assert plain.debias == "none" and row.key != plain.key
    # a fitted row's cache depends on how many train-user scenes it was fitted on
    mnl = {r.label: r for r in plan_rows(FidelityConfig(fit_scenes=400), None)}[LABEL_MNL]
    other = {r.label: r for r in plan_rows(FidelityConfig(fit_scenes=800), None)}[LABEL_MNL]
    assert mnl.fit_scenes == 400 and mnl.key != other.key
    with pytest.raises(ConfigError, match="debias methods"):
        FidelityConfig(debias=("sideways",)).validate()


def test_cli_parses_and_helps(capsys):
    from usermirrorer.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["bench", "fidelity", "--limit", "5", "--model", "m@decision", "--no-direct-ft"])
    assert args.limit == 5 and args.model == ["m@decision"] and args.no_direct_ft
    args = parser.parse_args(["bench", "fidelity-finetune", "--sft-steps", "3"])
    assert args.sft_steps == 3 and args.negatives == "mixed"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "fidelity", "--help"])
    assert "popularity-matched" in capsys.readouterr().out
    assert np.isfinite(1.0)


def test_likelihood_row_is_reported_under_each_scoring_rule_with_a_fitted_temperature(first_run):
    by_label = {r["label"]: r for r in first_run["rows"] if r["variant"] == "standard"}
    likelihood = [lb for lb in first_run["row_order"] if "base, likelihood" in lb]
    assert [lb.split("(")[-1].rstrip(")") for lb in likelihood] == [
        "PMI", "PMI at T=1", "sum of log-probs", "per-token mean", "prior weight fitted"]
    for label in likelihood:
        row = by_label[label]
        assert row["mode"] == "likelihood" and "temperature" in row["note"]
        assert ("not fitted" if label.endswith("T=1)") else "train-user scenes") in row["note"]
        assert row["score"]["n"] == N_SCENES
    # a likelihood row has no letters: no position bias beyond the real items' own spread
    assert by_label[likelihood[0]]["score"]["position_bias_tv"] < 0.25
    assert by_label[LABEL_MNL]["kind"] == "mnl"
    assert "weights on standardised features" in by_label[LABEL_MNL]["note"]
    assert by_label[LABEL_MNL + ", fitted on popularity-matched"]["kind"] == "mnl"
    assert by_label[LABEL_COOCCURRENCE]["kind"] == "cooccurrence"
    assert "weights on standardised features: cooccurrence" in by_label[LABEL_COOCCURRENCE]["note"]
    roles = {by_label[lb]["role"] for lb in likelihood}
    assert roles == {"base LLM", "scoring variant"}
    # the LLM's rows are compared with the learned MNL and the co-occurrence scorer, the honest bars
    for bar in (LABEL_MNL, LABEL_COOCCURRENCE):
        assert any(c["b"] == bar and c["a"] == likelihood[0] for c in first_run["comparisons"])


def test_two_model_rows_are_compared_with_each_other_rule_by_rule(first_run, project, tiny_model_dir):
    """An A/B of two checkpoints: two --model rows in likelihood mode, paired against each other
    under the same scoring rule only, and each against the base and the bars."""
    models = tuple(parse_extra_model(f"{tiny_model_dir}@likelihood={name}") for name in ("ckpt A", "ckpt B"))
    out = run_fidelity(_config(project, tiny_model_dir, results_dir=str(project / "results-ab"), extra_models=models,
                               base_modes=("likelihood",), baselines=("collaborative",), direct_ft=False,
                               likelihood_ft=False, decision_limit=0))
    pairs = {(c["a"], c["b"]) for c in out["comparisons"]}
    assert ("ckpt A (PMI)", "ckpt B (PMI)") in pairs
    assert ("ckpt A (prior weight fitted)", "ckpt B (prior weight fitted)") in pairs
    assert ("ckpt A (PMI)", "ckpt B (prior weight fitted)") not in pairs
    assert ("ckpt B (PMI)", "ckpt A (PMI)") not in pairs  # each pair once
    base = next(r["label"] for r in out["rows"] if r["role"] == "base LLM" and r["label"].endswith("(PMI)"))
    assert ("ckpt B (PMI)", base) in pairs and ("ckpt B (PMI)", "collaborative (spectral)") in pairs
    assert ("ckpt B (prior weight fitted)", base) not in pairs  # the base under the same rule only
    same = [c for c in out["comparisons"] if (c["a"], c["b"]) == ("ckpt A (PMI)", "ckpt B (PMI)")]
    # the same model twice: no difference on any scene
    assert len(same) == 2 and all(c["difference"] == 0.0 for c in same)
    assert "ckpt A (PMI)** vs ckpt B (PMI)" in out["conclusion"]
    text = (project / "results-ab" / "fidelity.md").read_text(encoding="utf-8")
    assert "| ckpt A (PMI) | ckpt B (PMI) |" in text


def test_a_likelihood_training_adds_its_rows_and_a_learning_curve(first_run, project, tiny_model_dir):
    import shutil
    from dataclasses import replace

    from usermirrorer.data_pipeline.training.likelihood_train import profile_config
    from usermirrorer.fidelity.likelihood_training import train_likelihood_row

    config = replace(profile_config("tiny", project_path=str(project)), dataset="synthetic", eval_user_fraction=0.3,
                     base_model=str(tiny_model_dir), examples=8, batch_size=2, curve=(4,), save_every=4)
    manifest = train_likelihood_row(config, progress=False)
    split = json.loads(FidelityPaths(project).split.read_text())
    assert manifest["trained_user_ids"] and not set(manifest["trained_user_ids"]) & set(split["eval_users"])
    assert [c["examples"] for c in manifest["checkpoints"]] == [4, 8]
    train_likelihood_row(replace(config, loss="letters"), progress=False)  # scored in direct mode
    try:
        result = run_fidelity(_config(project, tiny_model_dir, baselines=("random", "collaborative", "popularity"),
                                      base_modes=("likelihood", "direct"), curve_limit=10, fit_scenes=20,
                                      likelihood_fit_scenes=20, results_dir=str(project / "results-trained")))
        rows = {r["label"]: r for r in result["rows"] if r["variant"] == "standard"}
        name = Path(tiny_model_dir).name
        final = rows[f"{name} trained (next-item, 8 ex), likelihood (PMI)"]
        assert final["role"] == "fine-tuned" and final["score"]["n"] == N_SCENES
        # the trained row pooled with collaborative, then with every member the run has (here the
        # untrained LLM and popularity too), fitted on each set of train-user scenes, then that
        # wide pool gated by the popularity spread, fitted once on all, the same without the
        # untrained LLM (what `usermirrorer fit-pool` saves), and its log-only members alone
        pooled = [label for label in rows if label.startswith("pool: ")]
        wide = "untrained LLM × collaborative × popularity"
        assert pooled == [f"pool: {name} trained (next-item, 8 ex), likelihood × {members}" + suffix
                          for members in ("collaborative", wide)
                          for suffix in ("", ", fitted on standard", ", fitted on popularity-matched")] + [
            f"pool: {name} trained (next-item, 8 ex), likelihood × {members}, gated by popularity spread"
            for members in (wide, "collaborative × popularity")] + [
            "pool: collaborative × popularity, gated by popularity spread"]  # the same without an LLM
        assert "popularity × spread" in rows[pooled[6]]["note"] and "fitted by log-loss on 20" in rows[pooled[6]]["note"]
        assert "fit-pool" in rows[pooled[7]]["note"] and "fit-pool" not in rows[pooled[6]]["note"]
        assert "weights trained LLM" in rows[pooled[3]]["note"] and "untrained LLM" in rows[pooled[3]]["note"]
        assert rows[pooled[0]]["score"]["n"] == N_SCENES and "fitted by log-loss on 20 train-user" in rows[pooled[0]]["note"]
        assert "fitted by log-loss on 10 train-user" in rows[pooled[2]]["note"]
        compared = {(c["a"], c["b"]) for c in result["comparisons"]}
        assert (pooled[0], final["label"]) in compared and (pooled[2], "collaborative (spectral)") in compared
        curve_row = rows[f"{name} trained (next-item, 4 ex), likelihood (PMI)"]
        assert curve_row["role"] == "learning curve" and curve_row["score"]["n"] == 10
        points = {(p["examples"], p["variant"]) for p in result["learning_curve"] if p["rule"] == "PMI"}
        assert points == {(x, v) for x in (0, 4, 8) for v in ("standard", "popularity-matched")}
        assert {p["score"]["n"] for p in result["learning_curve"]} == {10}
        # each likelihood point also in the gated pool with the log-only models, beside that pool alone
        pooled_points = {(p["loss"], p["examples"], p["variant"]) for p in result["learning_curve"]
                         if p["rule"] == "pooled"}
        assert pooled_points == {(loss, x, v) for v in ("standard", "popularity-matched")
                                 for loss, x in (("next-item", 0), ("next-item", 4), ("next-item", 8),
                                                 ("log-only pool", 0))}
        letters = rows[f"{name} trained (letters, 8 ex), direct"]
        assert letters["mode"] == "direct" and letters["role"] == "fine-tuned"
        points = {(p["examples"], p["variant"]) for p in result["learning_curve"] if p["loss"] == "letters"}
        assert points == {(x, v) for x in (0, 4, 8) for v in ("standard", "popularity-matched")}
        assert {p["rule"] for p in result["learning_curve"] if p["loss"] == "letters"} == {"letters"}
        md = (project / "results-trained" / "fidelity.md").read_text()
        assert "## Learning curve (held-out users)" in md and "## Likelihood-mode training (next-item, CPU)" in md
        assert "| log-only pool | 0 |" in md and "'pooled' = the point's PMI scores in the gated pool" in md
        assert "## Direct (letter)-mode training (letters, CPU)" in md
        assert "trained (next-item, 4 ex)" not in md.split("## Learning curve")[0]  # curve points: own section
        assert (project / "results-trained" / "fidelity_learning_curve.png").stat().st_size > 0
        # a training whose users meet the eval users is refused
        path = FidelityPaths(project).likelihood_ft("next-item") / "training.json"
        bad = json.loads(path.read_text())
        bad["trained_user_ids"] = split["eval_users"][:1] + bad["trained_user_ids"]
        path.write_text(json.dumps(bad))
        with pytest.raises(DataError, match="trained on 1 eval user"):
            run_fidelity(_config(project, tiny_model_dir, baselines=("random",), base_modes=()))
    finally:
        shutil.rmtree(FidelityPaths(project).root / "likelihood-ft")
