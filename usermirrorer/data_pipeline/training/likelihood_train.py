"""Recipe: train a model for likelihood mode on the train users' real choices.

Likelihood mode (:mod:`usermirrorer.sim.simulator`) scores each option text by its
log-likelihood after the scene's profile and history. This recipe trains exactly that score,
on the users a benchmark split left for training, in one of two losses:

- ``next-item``: language modelling of the real item's text after the scene's context (the
  likelihood-mode prompt), loss on the item's tokens only. Every real interaction of a train
  user is such an example.
- ``letters``: the paper's letter format, re-tested with this machinery (#13 item 3): the
  direct-mode prompt, cross-entropy over the K option letters' logits at the answer position
  (renormalised over the letters, as letter mode reads them). Each scene's options are shifted
  cyclically so that the real item sits at letter ``i mod K`` for the ``i``-th scene: every
  letter is the answer equally often, so the data carry no letter prior to learn. Checkpoints
  are scored in direct mode by the fidelity benchmark.
- ``listwise``: a softmax over the scene's K option PMI scores (each option's summed token
  log-probs after the scene's context minus after the neutral context: likelihood mode's
  default score) divided by a learned temperature, against the real option: the benchmark's
  own log-loss. The temperature starts at the value fitted on the first train scenes and
  learns at its own, larger rate: at T=1 the PMI log-loss is ~5 nats (overconfident), and the
  gradient would mostly shrink the scores' scale instead of teaching which option this user
  picks; the raw sums are no use here (their fitted T ran to the 1,000 bound: the title prior
  points away from the real item on standard exposures). The K options share the context:
  they are packed into one sequence after it, each attending to the context and to itself only
  (a block attention mask, positions continuing after the context), so the context is
  computed once per scene, and the neutral context once per batch (all the batch's options
  packed after it).
- ``residual``: ``listwise`` with fixed per-option offsets, ``softmax(offset + PMI / T)``: the
  offset is the log-probability another choice model (the fidelity benchmark passes its gated
  pool of the log-only models, :func:`usermirrorer.fidelity.pool_fit.fit_log_only_pool`) gives each
  option, computed once per scene before training. Why: pooled with those models after plain
  listwise training, the trained LLM added +1.0 / +0.4 pp E[acc] (standard / matched) over them;
  its gradient went to what the log already says (popularity, co-watching). With the offsets in
  the loss a scene the log-only pool already gets right gives little gradient, so the LLM learns
  what the pool misses. The model is still scored alone in likelihood mode, and pooled by the
  benchmark with the log-only models (weights refitted there).

Token ids come from the simulator's own :class:`~usermirrorer.sim.backends.base.ChatPromptEncoder`
(``encode_continuations``), so training sees the very tokens the likelihood scorer scores.

Only the top ``trainable_layers`` decoder layers and the final norm learn (the tied embedding
stays frozen): on 2 CPU cores a full backward pass costs three times the forward, and the
frozen layers below need no activations kept. Logits are computed only where a target token
is predicted (the 49k-wide head over every context position would cost as much as 7 layers).
bf16 autocast is used where the CPU has native bf16 (``avx512_bf16``/AMX, read from
``/proc/cpuinfo``), fp32 elsewhere; with it the frozen layers are held in bf16 (autocast would
cast their weights again at every forward). A batch's examples run as one padded forward, so
each weight is read once per batch. Together these made a step 1.37x faster (1.03 -> 0.75 s
per example, the same batches, old and new code run alternately on this task's 2 cores).

It is a plain PyTorch loop in torchtune's recipe shape (``setup``, ``train``,
``save_checkpoint``; every knob in a YAML under ``configs/likelihood/`` that opens with its command)
rather than a ``tune run`` recipe: both losses need the simulator's encoder and the packed
block mask, neither of which torchtune's datasets or its HF checkpoint round trip carries, and
the checkpoints must load in the transformers backend as they are.

Resumable: ``<out>/state.pt`` (trainable weights, optimizer, scheduler, examples done, seconds)
is written atomically every ``save_every`` examples; a re-run with the same options continues
from it, one with other options is refused. Checkpoints (Hugging Face folders, bf16) land in
``<out>/checkpoints/ex-<N>`` at each ``curve`` point, for the benchmark's learning curve.
``<out>/training.json`` lists them, the train users, the speed and the FLOP estimate.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.data_pipeline.sampling.sampler import HISTORY_LENGTHS
from usermirrorer.data_pipeline.scene import reorder_options, scene_target, scene_text
from usermirrorer.data_pipeline.training.stage import progress_bar
from usermirrorer.data_pipeline.training.train_scenes import TRAIN_NEGATIVES, sample_train_scenes
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.sim.backends.base import ChatPromptEncoder
from usermirrorer.sim.backends.transformers_backend import cpu_supports_bf16
from usermirrorer.sim.metrics import fit_temperature
from usermirrorer.sim.models import resolve_model
from usermirrorer.sim.prompts import build_likelihood_prompt, build_prompt

__all__ = [
    "LOSSES",
    "LOSS_MODES",
    "MANIFEST_NAME",
    "PROFILES",
    "LikelihoodTrainConfig",
    "LikelihoodTrainRecipe",
    "TrainExample",
    "attach_offsets",
    "encode_examples",
    "load_train_config",
    "profile_config",
]

LOSSES = ("next-item", "listwise", "letters", "residual")
# the simulator mode a loss trains for (the fidelity benchmark scores its checkpoints in it)
LOSS_MODES = {"next-item": "likelihood", "listwise": "likelihood", "letters": "direct", "residual": "likelihood"}
# losses over the K options' PMI scores (the neutral context is encoded for them)
_PMI_LOSSES = ("listwise", "residual")
MANIFEST_NAME = "training.json"
# the recipe's own YAMLs (a folder apart from the torchtune configs beside it)
CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "likelihood"
# profile name -> shipped YAML
PROFILES = {"cpu": "smollm2_135m_cpu.yaml", "tiny": "tiny_random.yaml"}
_TRAIN_SEED_TAG = 97
_LOG_TEMPERATURE = "listwise.log_temperature"  # its key in the resume state
# listwise: the temperature is fitted on this many first train scenes, then learns at this rate
_TEMPERATURE_FIT_EXAMPLES = 32
_TEMPERATURE_LR = 1e-2  # differs from the benchmark's fit scenes (91, 92) and the direct recipe (83)


@dataclass(frozen=True)
class LikelihoodTrainConfig:
    """Options of the likelihood-mode training recipe (the YAMLs under ``configs/likelihood/`` set them).

    Attributes:
        project_path: working directory (raws, the benchmark's split, embeddings).
        dataset: raw dataset name.
        seed, eval_user_fraction: the benchmark's user split (must match the benchmark's).
        base_model: model to start from (registry name or folder).
        loss: ``next-item``, ``listwise``, ``letters`` (direct mode's letter format) or
            ``residual`` (listwise with another model's fixed offsets).
        examples: train examples seen in total (one scene each; the scenes are sampled once).
        k: options per train scene (``listwise`` scores all of them).
        negatives: how the train scenes' other options are drawn.
        history_length: the train scenes' history: ``uniform`` in 2..10 items (the sampler's
            train rule) or ``longest`` (10, what every eval prompt shows).
        embedder: content scorer of the standard construction (None: left out).
        trainable_layers: top decoder layers that learn (with the final norm).
        lr, weight_decay, warmup: AdamW and a linear warm-up then linear decay to 0.
        batch_size: examples per optimizer step (gradients accumulated one example at a time).
        curve: example counts at which a checkpoint is written (the learning curve); the last
            one is always ``examples``.
        save_every: examples between resume states.
        max_tokens: longest example accepted (context + option tokens).
        dtype: ``auto`` (bf16 autocast where the CPU has native bf16), ``bf16`` or ``fp32``.
        threads: torch threads.
    """

    project_path: str = "./workspace"
    dataset: str = "ml-100k"
    seed: int = 0
    eval_user_fraction: float = 0.2
    base_model: str = "smollm2-135m"
    loss: str = "next-item"
    examples: int = 4000
    k: int = 5
    negatives: str = "mixed"
    history_length: str = "uniform"
    embedder: str | None = "minilm"
    trainable_layers: int = 6
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: int = 100
    batch_size: int = 8
    curve: tuple[int, ...] = (500, 1000, 2000)
    save_every: int = 200
    max_tokens: int = 2048
    dtype: str = "auto"
    threads: int = 2

    def validate(self) -> LikelihoodTrainConfig:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.negatives not in TRAIN_NEGATIVES:
            raise ConfigError(f"negatives must be one of {list(TRAIN_NEGATIVES)}, got {self.negatives!r}")
        if self.history_length not in HISTORY_LENGTHS:
            raise ConfigError(f"history_length must be one of {list(HISTORY_LENGTHS)}, got {self.history_length!r}")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"dtype must be auto, bf16 or fp32, got {self.dtype!r}")
        for name in ("examples", "batch_size", "save_every", "threads", "trainable_layers", "k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k < 2:
            raise ConfigError(f"k must be >= 2 (a choice needs two options), got {self.k}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.warmup < 0 or self.weight_decay < 0:
            raise ConfigError(f"warmup and weight_decay must be >= 0, got {self.warmup}, {self.weight_decay}")
        bad = [c for c in self.curve if not 1 <= c <= self.examples]
        if bad:
            raise ConfigError(f"curve points {bad} lie outside 1..examples={self.examples}")
        return self

    @property
    def checkpoints_at(self) -> list[int]:
        """Example counts that get a checkpoint (the curve points and the end)."""
        return sorted({*self.curve, self.examples})

    def fingerprint(self) -> str:
        """What a resume must agree on (everything but the thread count)."""
        fixed = {k: v for k, v in asdict(self).items() if k != "threads"}
        if fixed["history_length"] == "uniform":  # the default before the option existed: old states resume
            del fixed["history_length"]
        return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=list).encode()).hexdigest()[:16]


def load_train_config(path: str | os.PathLike, **overrides: Any) -> LikelihoodTrainConfig:
    """Read a recipe YAML (keys are :class:`LikelihoodTrainConfig` fields), then apply ``overrides``.

    Raises:
        ConfigError: unreadable YAML, an unknown key, or a value of the wrong type.
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the training config: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(raw).__name__}")
    known = {f.name: f for f in fields(LikelihoodTrainConfig)}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted((set(raw) | set(given)) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {unknown}; known: {sorted(known)}")
    values = {**raw, **given}
    if "curve" in values:
        values["curve"] = tuple(int(c) for c in values["curve"])
        if "examples" in given and "curve" not in given:  # a shorter run keeps the points it reaches
            values["curve"] = tuple(c for c in values["curve"] if c <= int(given["examples"]))
    defaults = LikelihoodTrainConfig()
    for name, value in values.items():
        expected = type(getattr(defaults, name))
        if expected is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:  # YAML reads 1e-3 (no dot) as a string
                values[name] = float(value)
            except ValueError:
                raise ConfigError(f"{path}: option {name!r} = {value!r}; expected a number") from None
        elif value is not None and not isinstance(values[name], expected) and getattr(defaults, name) is not None:
            raise ConfigError(f"{path}: option {name!r} = {value!r}; expected a {expected.__name__}")
    return LikelihoodTrainConfig(**values).validate()


def profile_config(profile: str, **overrides: Any) -> LikelihoodTrainConfig:
    """The shipped config of a profile (``cpu``: SmolLM2-135M; ``tiny``: the tiny random model)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown training profile {profile!r}; expected one of {sorted(PROFILES)} "
                          "(or pass --config FILE.yaml)")
    return load_train_config(CONFIG_DIR / PROFILES[profile], **overrides)


@dataclass
class TrainExample:
    """One tokenised train scene.

    Attributes:
        scene_id: the scene it came from.
        context: token ids of the likelihood-mode prompt up to where the options differ.
        options: each option's token ids after ``context`` (one entry, the real item, for
            ``next-item``).
        scored_from: per option, the first of its tokens that is scored (normally 0; more when
            the tokenizer merged the prompt's last token with the option's first).
        target: index of the real item in ``options``.
        neutral: ``listwise``/``residual``: the token rows of each option after the neutral
            context and where each option starts in its row (the PMI score's second term).
        offset: ``residual``: each option's fixed log-term from the offset model.
    """

    scene_id: str
    context: list[int]
    options: list[list[int]]
    scored_from: list[int]
    target: int
    neutral: tuple[list[list[int]], list[int]] | None = None
    offset: list[float] | None = None

    @property
    def n_tokens(self) -> int:
        """Tokens computed for this example (its options after the neutral context included; that
        context itself is computed once per batch)."""
        own = len(self.context) + sum(len(o) for o in self.options)
        if self.neutral:
            rows, starts = self.neutral
            own += sum(len(r) - min(starts) for r in rows)
        return own

    @property
    def n_scored(self) -> int:
        """Tokens whose log-prob the loss reads (head computed there only)."""
        own = sum(len(o) - f for o, f in zip(self.options, self.scored_from))
        return own + (sum(len(r) - s for r, s in zip(*self.neutral)) if self.neutral else 0)


def encode_examples(scenes: Sequence[Mapping[str, Any]], encoder: ChatPromptEncoder, loss: str,
                    max_tokens: int) -> list[TrainExample]:
    """Tokenise train scenes as the likelihood scorer does (``next-item``: the real option only;
    ``letters``: as letter mode does, see :func:`letter_example`).

    Raises:
        DataError: a scene whose example is longer than ``max_tokens`` (named by its id).
    """
    out = []
    neutral = build_likelihood_prompt(None)
    for index, scene in enumerate(scenes):
        if loss == "letters":
            out.append(_checked(letter_example(scene, encoder, index), max_tokens))
            continue
        _, _, options = scene_text(scene)
        target = scene_target(scene)
        texts = [options[target]] if loss == "next-item" else list(options)
        sid = str(scene.get("scene_id"))
        example = _pack(*encoder.encode_continuations(build_likelihood_prompt(dict(scene)), texts), sid,
                        0 if loss == "next-item" else target)
        if loss in _PMI_LOSSES:
            example.neutral = encoder.encode_continuations(neutral, texts)
        out.append(_checked(example, max_tokens))
    return out


def letter_example(scene: Mapping[str, Any], encoder: ChatPromptEncoder, index: int) -> TrainExample:
    """The ``index``-th train scene in letter format, its real item moved to letter ``index mod K``.

    The options are shifted cyclically (their order around the circle is kept), so over any
    K consecutive scenes each letter is the answer once. The example's "options" are the K
    letter tokens after the whole direct-mode prompt: :func:`option_logprobs` then gives each
    letter's log-probability at the answer position, in one forward of the prompt.
    """
    _, _, options = scene_text(scene)
    k = len(options)
    shift = (scene_target(scene) - index) % k
    shown = reorder_options(dict(scene), [(j + shift) % k for j in range(k)], f"letters{shift}")
    prompt = build_prompt(dict(shown), "direct")
    (ids,) = encoder.encode([prompt])
    letters = encoder.letter_ids_for(prompt, prompt.letters)
    return TrainExample(scene_id=str(scene.get("scene_id")), context=list(ids), options=[[t] for t in letters],
                        scored_from=[0] * k, target=scene_target(shown))


def attach_offsets(examples: Sequence[TrainExample], scenes: Sequence[Mapping[str, Any]], offset_model: Any) -> None:
    """Set each example's ``offset``: the log-probabilities ``offset_model`` gives its scene's options.

    Raises:
        DataError: the model answers a scene with other than one finite log-prob per option.
    """
    from usermirrorer.sim.pool import log_probs

    results = offset_model.choice_probs([dict(s) for s in scenes])
    for example, result in zip(examples, results, strict=True):
        offset = log_probs(result.probs)
        if offset.shape != (len(example.options),) or not np.all(np.isfinite(offset)):
            raise DataError(f"the offset model gave train scene {example.scene_id!r} {offset.shape} log-probs; "
                            f"expected {len(example.options)} finite ones (one per option, no outside option)")
        example.offset = offset.tolist()


def _checked(example: TrainExample, max_tokens: int) -> TrainExample:
    if example.n_tokens > max_tokens:
        raise DataError(f"train scene {example.scene_id!r} is {example.n_tokens} tokens; max_tokens is "
                        f"{max_tokens}: raise max_tokens in the training config")
    return example


def _pack(rows: list[list[int]], starts: list[int], scene_id: str, target: int) -> TrainExample:
    """Rows of one prompt + each option (``encode_continuations``) as a shared context and option tails."""
    p = min(starts)
    return TrainExample(scene_id=scene_id, context=rows[0][:p], options=[r[p:] for r in rows],
                        scored_from=[s - p for s in starts], target=target)


def packed_inputs(example: TrainExample):
    """Input ids, position ids, additive 4D attention mask and the scored positions of one example.

    The options follow the context in one sequence; option ``j`` attends to the context and to
    its own earlier tokens only, and its positions continue from the context's end, so each
    option's log-probs equal those of ``context + option`` scored alone.

    Returns:
        ``(ids, positions, mask, predict_at, targets, owner)``: the logits at ``predict_at`` give
        the log-prob of ``targets``; ``owner`` says which option each scored token belongs to.
    """
    import torch

    p = len(example.context)
    ids = list(example.context)
    positions = list(range(p))
    predict_at, targets, owner = [], [], []
    spans = []
    for j, (tokens, first) in enumerate(zip(example.options, example.scored_from)):
        start = len(ids)
        ids.extend(tokens)
        positions.extend(range(p, p + len(tokens)))
        spans.append((start, len(tokens)))
        for t in range(first, len(tokens)):
            # the first option token is predicted from the context's last position
            predict_at.append(p - 1 if t == 0 else start + t - 1)
            targets.append(tokens[t])
            owner.append(j)
    n = len(ids)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[:p, :p] = torch.ones(p, p, dtype=torch.bool).tril()
    for start, length in spans:
        allowed[start : start + length, :p] = True
        allowed[start : start + length, start : start + length] = torch.ones(length, length, dtype=torch.bool).tril()
    mask = torch.zeros(1, 1, n, n)
    mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return (torch.tensor([ids]), torch.tensor([positions]), mask, torch.tensor(predict_at), torch.tensor(targets),
            torch.tensor(owner))


def option_logprobs(model: Any, example: TrainExample, autocast: bool):
    """``(K,)`` tensor: each option's summed token log-prob after the context (differentiable)."""
    (scores,) = batch_option_logprobs(model, [example], autocast)
    return scores


def batch_option_logprobs(model: Any, examples: Sequence[TrainExample], autocast: bool) -> list[Any]:
    """:func:`option_logprobs` of several examples in one forward: their packed rows padded to one length.

    One ``(B, L)`` forward instead of ``B`` of ``(1, L_b)``: each weight matrix is read (and, under
    autocast, cast) once per batch instead of once per example. A padded position attends to
    itself only and is never scored, so each row's log-probs are those of its example alone.
    """
    import torch

    packs = [packed_inputs(e) for e in examples]
    width = max(ids.shape[1] for ids, *_ in packs)
    ids = torch.zeros(len(packs), width, dtype=torch.long)
    positions = torch.zeros(len(packs), width, dtype=torch.long)
    mask = torch.full((len(packs), 1, width, width), torch.finfo(torch.float32).min)
    pad = torch.arange(width)
    rows, cols, targets, owners = [], [], [], []
    for b, (row_ids, row_positions, row_mask, predict_at, row_targets, owner) in enumerate(packs):
        n = row_ids.shape[1]
        ids[b, :n], positions[b, :n], mask[b, 0, :n, :n] = row_ids[0], row_positions[0], row_mask[0, 0]
        mask[b, 0, pad[n:], pad[n:]] = 0.0
        rows.append(torch.full_like(predict_at, b))
        cols.append(predict_at)
        targets.append(row_targets)
        owners.append(owner)
    # The mask is passed even for one option (where it is the causal one): on CPU, transformers
    # 5.24's own causal path ran the same example 16x slower (0.14 vs 2.3 examples/s, bf16).
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        logits = model.lm_head(hidden[torch.cat(rows), torch.cat(cols)])
    token_lp = torch.log_softmax(logits.float(), dim=-1).gather(1, torch.cat(targets)[:, None])[:, 0]
    out, at = [], 0
    for example, owner in zip(examples, owners):
        out.append(torch.zeros(len(example.options)).index_add(0, owner, token_lp[at : at + len(owner)]))
        at += len(owner)
    return out


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class LikelihoodTrainRecipe:
    """Train ``config.base_model`` for likelihood mode; see the module docstring.

    Args:
        config: the recipe's options.
        ds: the dataset.
        train_users: users whose interactions may be trained on.
        eval_users: held-out users; none of their interactions is used.
        out: output folder (state, checkpoints, ``training.json``).
        split_info: how the split was made, recorded in the manifest.
        fresh: discard a resume state of other options instead of refusing.
        offset_model: ``residual`` only: a choice model (``choice_probs(scenes)`` -> results with
            ``probs``) whose log-probabilities are the fixed offsets; fitted on train users only.
        offset_info: what is known of it, recorded in the manifest.
    """

    def __init__(self, config: LikelihoodTrainConfig, ds: RawDataset | None, train_users: Sequence[str],
                 eval_users: Sequence[str], out: str | os.PathLike, *,
                 split_info: Mapping[str, Any] | None = None, fresh: bool = False, offset_model: Any = None,
                 offset_info: Mapping[str, Any] | None = None):
        self.config = config.validate()
        if (config.loss == "residual") != (offset_model is not None):
            raise ConfigError("the residual loss needs an offset model and the other losses take none; "
                              "`usermirrorer train --loss residual` fits the log-only pool for it")
        self.offset_model = offset_model
        self.offset_info = dict(offset_info or {})
        self.ds = ds
        self.train_users = list(train_users)
        self.eval_users = list(eval_users)
        self.out = Path(out)
        self.split_info = dict(split_info or {})
        self.fresh = fresh
        self.examples: list[TrainExample] = []
        self.done = 0
        self.seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        c = self.config
        return (f"LikelihoodTrainRecipe(model={c.base_model!r}, loss={c.loss!r}, examples={c.examples}, "
                f"done={self.done}, out={str(self.out)!r})")

    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    # ------------------------------------------------------------------ setup
    def setup(self, scenes: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Sample and tokenise the train scenes, load the model, restore a resume state.

        Args:
            scenes: train scenes to use instead of sampling them from the train users (the
                first ``examples`` are trained on; still refused if one is an eval user's).
        """
        import torch

        c = self.config
        torch.set_num_threads(c.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        if scenes is None:
            scenes = sample_train_scenes(self.ds, c.examples, k=c.k, negatives=c.negatives, seed=c.seed,
                                         seed_tag=_TRAIN_SEED_TAG, train_users=self.train_users,
                                         eval_users=self.eval_users, project_path=c.project_path,
                                         embedder=c.embedder, history_length=c.history_length)
        scenes = list(scenes)[: c.examples]
        leaked = {str(s.get("user_id")) for s in scenes} & set(self.eval_users)
        if leaked:
            raise DataError(f"train scenes contain {len(leaked)} eval user(s); refusing to train on them")
        if len(scenes) < c.examples:
            raise DataError(f"the train users give {len(scenes)} scenes, fewer than examples={c.examples}; lower "
                            "examples in the training config")
        self.scene_seconds = time.perf_counter() - t
        self.model_dir = resolve_model(c.base_model)
        self.encoder = ChatPromptEncoder.from_pretrained(self.model_dir, c.base_model)
        self.examples = encode_examples(scenes, self.encoder, c.loss, c.max_tokens)
        if self.offset_model is not None:
            t = time.perf_counter()
            attach_offsets(self.examples, scenes, self.offset_model)
            self.offset_seconds = time.perf_counter() - t
        self.trained_user_ids = sorted({str(s["user_id"]) for s in scenes})
        self.autocast = c.dtype == "bf16" or (c.dtype == "auto" and cpu_supports_bf16())

        from transformers import AutoModelForCausalLM

        torch.manual_seed(c.seed)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32,
                                                          attn_implementation="sdpa")
        self.model.train()
        layers = self.model.model.layers
        if c.trainable_layers > len(layers):
            raise ConfigError(f"trainable_layers={c.trainable_layers} but {c.base_model} has {len(layers)} layers")
        for param in self.model.parameters():
            param.requires_grad_(False)
        trainable = [*layers[len(layers) - c.trainable_layers :], self.model.model.norm]
        self.params = [p for module in trainable for p in module.parameters()]
        if self.autocast:  # held in bf16 once, not cast to it at every forward (autocast caches trainable casts only)
            for module in (*layers[: len(layers) - c.trainable_layers], self.model.model.embed_tokens,
                           self.model.lm_head):
                module.to(torch.bfloat16)
        for param in self.params:
            param.requires_grad_(True)
        # listwise: log T, started at the temperature fitted on the first train scenes
        self.log_temperature = torch.nn.Parameter(torch.tensor(self._initial_log_temperature()))
        groups = [{"params": self.params}]
        if c.loss in _PMI_LOSSES:
            groups.append({"params": [self.log_temperature], "lr": _TEMPERATURE_LR, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
        steps = -(-c.examples // c.batch_size)
        warmup = min(c.warmup, max(steps - 1, 0))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (steps - step) / max(1, steps - warmup))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self._restore()

    def _initial_log_temperature(self) -> float:
        if self.config.loss not in _PMI_LOSSES:
            return 0.0
        import torch

        first = self.examples[:_TEMPERATURE_FIT_EXAMPLES]
        size = self.config.batch_size
        with torch.no_grad():
            scores = [s.numpy() for at in range(0, len(first), size) for s in self.pmi_scores(first[at : at + size])]
        # residual: fitted without the offsets too. With them the fit ran to the bound (T=962 of
        # 1,000 on ML-100K): the untrained scores add nothing to the log-only pool, and at that
        # scale nothing the LLM learns would move the loss; T then learns where it should sit.
        return float(np.log(fit_temperature(scores, [e.target for e in first])))

    def _trainable_state(self) -> dict[str, Any]:
        names = {id(p): n for n, p in self.model.named_parameters()}
        state = {names[id(p)]: p.detach().clone() for p in self.params}
        state[_LOG_TEMPERATURE] = self.log_temperature.detach().clone()
        return state

    def _restore(self) -> None:
        import torch

        if not self.state_path.exists():
            return
        state = torch.load(self.state_path, weights_only=False)
        if state.get("fingerprint") != self.config.fingerprint():
            if not self.fresh:
                raise ConfigError(f"{self.state_path} was written by a run with other options "
                                  f"({state.get('config')}); pass --fresh to start over, or the same options "
                                  "to resume")
            self.state_path.unlink()
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                (self.log_temperature if name == _LOG_TEMPERATURE else params[name]).copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.done, self.seconds = state["done"], state["seconds"]
        self.history, self.checkpoints = state["history"], state["checkpoints"]

    def _save_state(self) -> None:
        _atomic_torch_save({"fingerprint": self.config.fingerprint(), "config": asdict(self.config),
                            "trainable": self._trainable_state(), "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(), "done": self.done, "seconds": self.seconds,
                            "history": self.history, "checkpoints": self.checkpoints}, self.state_path)

    # ------------------------------------------------------------------ train
    def pmi_scores(self, batch: Sequence[TrainExample]) -> list[Any]:
        """Each example's ``(K,)`` PMI scores: options after its context minus after the neutral one.

        The neutral context is the same for every scene, so the options of the whole batch are
        packed after one copy of it (one forward instead of one per scene).
        """
        shared = _pack([r for e in batch for r in e.neutral[0]], [s for e in batch for s in e.neutral[1]],
                       "neutral", 0)
        prior = option_logprobs(self.model, shared, self.autocast)
        out, at = [], 0
        for example, scores in zip(batch, batch_option_logprobs(self.model, batch, self.autocast)):
            k = len(example.options)
            out.append(scores - prior[at : at + k])
            at += k
        return out

    def batch_loss(self, batch: Sequence[TrainExample]):
        """Mean loss of a batch: next-item NLL per target token, the letters' NLL of the real
        letter (renormalised over the K letters), or the listwise NLL of the real option under
        ``softmax(PMI / T)`` with the learned temperature ``T`` (``residual``:
        ``softmax(offset + PMI / T)``)."""
        import torch

        if self.config.loss == "letters":
            scores = batch_option_logprobs(self.model, batch, self.autocast)
            losses = [-torch.log_softmax(s, dim=0)[e.target] for s, e in zip(scores, batch)]
        elif self.config.loss == "next-item":
            scores = batch_option_logprobs(self.model, batch, self.autocast)
            losses = [-s[0] / max(1, len(e.options[0]) - e.scored_from[0]) for s, e in zip(scores, batch)]
        else:
            scale = torch.exp(-self.log_temperature)
            losses = [-torch.log_softmax(s * scale + (torch.tensor(e.offset) if e.offset is not None else 0.0),
                                         dim=0)[e.target]
                      for s, e in zip(self.pmi_scores(batch), batch)]
        return torch.stack(losses)

    def train(self, progress: bool = True) -> dict[str, Any]:
        """Run (or finish) the training; returns the manifest it writes to ``training.json``."""
        import torch

        c = self.config
        marks = [m for m in c.checkpoints_at if m > self.done]
        bar = progress_bar(progress)
        with bar:
            task = bar.add_task(f"train ({c.loss})", total=c.examples, completed=self.done)
            window: list[float] = []
            while self.done < c.examples:
                started = time.perf_counter()
                batch = self.examples[self.done : min(self.done + c.batch_size, c.examples)]
                self.optimizer.zero_grad(set_to_none=True)
                losses = self.batch_loss(batch)
                losses.mean().backward()
                window.extend(losses.detach().tolist())
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.done += len(batch)
                self.seconds += time.perf_counter() - started
                bar.update(task, completed=self.done, description=f"train ({c.loss}, loss {np.mean(window[-64:]):.3f})")
                save_point = (self.done // c.save_every != (self.done - len(batch)) // c.save_every
                              or self.done >= c.examples)
                if save_point:
                    self.history.append({"examples": self.done, "loss": float(np.mean(window)),
                                         "seconds": round(self.seconds, 1),
                                         "temperature": round(self.log_temperature.detach().exp().item(), 3),
                                         "load": _load_average()})
                    window = []
                while marks and self.done >= marks[0]:
                    self.save_checkpoint(marks.pop(0))
                if save_point:  # after the checkpoints, so the state lists them
                    self._save_state()
        return self.write_manifest()

    def save_checkpoint(self, mark: int) -> Path:
        """Write the model as it is now to ``checkpoints/ex-<mark>`` (a Hugging Face folder, bf16)."""
        import torch

        folder = self.out / "checkpoints" / f"ex-{mark}"
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        state = {k: v.detach().to(torch.bfloat16) for k, v in self.model.state_dict().items()}
        self.model.save_pretrained(tmp, state_dict=state)
        self.encoder.tokenizer.save_pretrained(tmp)
        config_file = tmp / "config.json"
        config_json = json.loads(config_file.read_text())
        config_json["dtype"] = "bfloat16"
        config_file.write_text(json.dumps(config_json, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        self.checkpoints = [x for x in self.checkpoints if x["examples"] != mark]
        self.checkpoints.append({"examples": mark, "steps": -(-mark // self.config.batch_size),
                                 "seconds": round(self.seconds, 1), "model_dir": str(folder)})
        return folder

    # ------------------------------------------------------------------ manifest
    def flops_per_example(self) -> float:
        """Estimated FLOPs of one example: the frozen forward, the trained layers' forward and
        backward (input and weight gradients), and the head at the scored positions."""
        cfg = self.model.config
        n = float(np.mean([e.n_tokens for e in self.examples]))
        scored = float(np.mean([e.n_scored for e in self.examples]))
        layer_params = sum(p.numel() for p in self.model.model.layers[0].parameters())
        n_layers = len(self.model.model.layers)
        head = cfg.vocab_size * cfg.hidden_size
        attention = 4 * n * cfg.hidden_size  # per token per layer: scores + weighted sum, ~context length
        per_layer = 2 * layer_params * n + attention * n
        trained = self.config.trainable_layers
        return per_layer * n_layers + 2 * per_layer * trained + 3 * 2 * head * scored

    def write_manifest(self) -> dict[str, Any]:
        c = self.config
        per_s = c.examples / self.seconds if self.seconds else None
        flops = self.flops_per_example()
        manifest = {
            "recipe": "usermirrorer.data_pipeline.training.likelihood_train",
            "command": command_line(c),
            "config": asdict(c),
            "dataset": c.dataset,
            "base_model": c.base_model,
            "loss": c.loss,
            "model_dir": self.checkpoints[-1]["model_dir"] if self.checkpoints else None,
            "checkpoints": sorted(self.checkpoints, key=lambda x: x["examples"]),
            "history": self.history,
            "train_scenes": len(self.examples),
            "train_users": len(self.trained_user_ids),
            "trained_user_ids": self.trained_user_ids,
            "split": {**self.split_info, "eval_users": len(self.eval_users)},
            "tokens_per_example": round(float(np.mean([e.n_tokens for e in self.examples])), 1),
            "autocast_bf16": self.autocast,
            "threads": c.threads,
            "train_seconds": round(self.seconds, 1),
            "examples_per_second": per_s and round(per_s, 3),
            "flops_per_example": flops,
            "achieved_gflops": per_s and round(per_s * flops / 1e9, 1),
            "scene_seconds": round(getattr(self, "scene_seconds", 0.0), 1),
            **({"offset_model": {**self.offset_info, "repr": repr(self.offset_model),
                                 "seconds": round(getattr(self, "offset_seconds", 0.0), 1)}}
               if self.offset_model is not None else {}),
            "load": self.history[-1].get("load") if self.history else None,
        }
        tmp = self.out / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / MANIFEST_NAME)
        return manifest


def command_line(config: LikelihoodTrainConfig) -> str:
    """The ``usermirrorer train`` command that runs ``config`` (the cpu profile plus what differs).

    Options without a flag of their own are written as ``--set key=value``.
    """
    base = profile_config("cpu")
    flags = {"project_path": "--project-path", "loss": "--loss", "examples": "--examples", "lr": "--lr",
             "trainable_layers": "--trainable-layers", "curve": "--curve", "threads": "--threads"}
    parts = ["usermirrorer train --profile cpu"]
    for name, value in asdict(config).items():
        if value == getattr(base, name) and name != "project_path":
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, tuple) else value
        parts.append(f"{flags[name]} {text}" if name in flags else f"--set {name}={text}")
    return " ".join(parts)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
