"""Transformers backend: the CPU default and the GPU fallback (DESIGN.md §5).

Scoring a prompt = one forward pass; the option distribution is the softmax of the logits of
the K letter tokens at the last position (right after ``Behavior: [``), i.e. the full
log-softmax restricted to those tokens and renormalised.

Most of a simulator prompt is repeated: every scene starts with the same system prompt, all
thoughts of a scene share the scene, and in an environment session the next step repeats the
user's profile and history. So the KV cache of token prefixes is reused:

1. the common token prefix of a batch is computed once (or found in the cache) and its KV
   cache is expanded over the batch, so only each row's suffix is computed;
2. a bounded LRU keeps KV caches keyed by their token ids; a request reuses the *longest
   common token prefix* with any entry (the entry is cropped) and computes the rest. Rows of
   a batch are remembered too, so the next step of each env session recomputes only its new
   tokens;
3. generation reads a prompt once for its ``n`` samples (the prompt's KV is copied ``n``
   times) and leaves that KV in the LRU, so scoring the thoughts right after (decision mode)
   computes only each thought and the behaviour suffix.

This only changes the order of work: :meth:`TransformersBackend.letter_logprobs` with
``share_prefix=True`` equals plain batched scoring to float rounding (tests check 1e-3 on
every probability in fp32).
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from typing import Any

import numpy as np

from usermirrorer.errors import BackendError, ConfigError
from usermirrorer.sim.backends.base import (
    BackendStats,
    ChatPromptEncoder,
    Prompt,
    SequenceScores,
    cut_at_stop,
    renormalise_logprobs,
)
from usermirrorer.sim.models import resolve_model

__all__ = ["TransformersBackend", "cpu_supports_bf16", "BackendStats"]

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}
# A shared prefix shorter than this is not worth a separate forward pass.
_MIN_SHARED_PREFIX = 8
# A row gets its own forward pass when the cache holds this many more of its tokens than
# the batch's common prefix (e.g. the previous step of its env session).
_MIN_ROW_GAIN = 16


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16).

    Without them bf16 matmuls are emulated and run slower than fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


class _PrefixLRU:
    """Bounded LRU of batch-1 KV caches keyed by token ids, searched by longest common prefix."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, tuple[np.ndarray, list[tuple[Any, Any]], int]] = OrderedDict()
        self._next = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def best(self, ids: np.ndarray, limit: int) -> tuple[int, int | None]:
        """``(length, key)`` of the longest common prefix of ``ids[:limit]`` with an entry."""
        best_len, best_key = 0, None
        q = ids[:limit]
        for key, (entry_ids, _, _) in self._entries.items():
            n = min(len(entry_ids), len(q))
            if n <= best_len:
                continue
            diff = np.flatnonzero(entry_ids[:n] != q[:n])
            common = int(diff[0]) if diff.size else n
            if common > best_len:
                best_len, best_key = common, key
        return best_len, best_key

    def get(self, key: int, length: int) -> list[tuple[Any, Any]]:
        """The entry's per-layer (keys, values), cut to ``length`` tokens (views, never mutated)."""
        self._entries.move_to_end(key)
        _, layers, _ = self._entries[key]
        return [(k[:, :, :length], v[:, :, :length]) for k, v in layers]

    def put(self, ids: np.ndarray, layers: list[tuple[Any, Any]]) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if self.max_entries <= 0 or size > self.max_bytes:
            return
        # An entry that is a prefix of the new one is now redundant.
        for key in [k for k, (e, _, _) in self._entries.items() if len(e) <= len(ids) and np.array_equal(e, ids[: len(e)])]:
            self.bytes -= self._entries.pop(key)[2]
        self._entries[self._next] = (ids.copy(), layers, size)
        self._next += 1
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self.bytes -= self._entries.popitem(last=False)[1][2]

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


class TransformersBackend:
    """Score and generate with a Hugging Face causal LM.

    Args:
        model: model registry name, local folder or hub id.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; default CUDA when available.
        dtype: ``"auto"`` (bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32),
            ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        num_threads: CPU threads for torch (default: leave torch's setting).
        share_prefix: reuse KV caches of shared token prefixes (see module docstring).
        prefix_cache_size: most KV caches kept in the LRU (0 disables the LRU).
        prefix_cache_mb: most memory the LRU's KV tensors may take, in MiB.
        remember_rows: also keep each scored row's own KV cache, so the next request of an
            env session continues from it (switch off for one-pass evaluation).
        max_context: refuse prompts longer than this many tokens (default: the model's
            ``max_position_embeddings``).
    """

    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str | Any = "auto",
        num_threads: int | None = None,
        share_prefix: bool = True,
        prefix_cache_size: int = 16,
        prefix_cache_mb: int = 1024,
        remember_rows: bool = True,
        max_context: int | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.model_name = model
        path = resolve_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = self._pick_dtype(dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        except OSError as exc:
            raise BackendError(f"could not load model {model!r} from {path!r}: {exc}") from None
        self.model.to(self.device).eval()
        self.encoder = ChatPromptEncoder(self.tokenizer, model)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        config_ctx = getattr(self.model.config, "max_position_embeddings", None) or 4096
        self.context_length = int(max_context or config_ctx)
        self.share_prefix = share_prefix
        self._lru = _PrefixLRU(prefix_cache_size, int(prefix_cache_mb) * 2**20)
        self.remember_rows = remember_rows
        params = inspect.signature(self.model.forward).parameters
        # transformers 5.2x renamed past_key_values -> cache (older 5.x only knows the old name)
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._can_share = self._croppable_cache()
        self.stats = BackendStats()

    # ------------------------------------------------------------------ setup helpers
    def _pick_dtype(self, dtype: str | Any):
        torch = self._torch
        if not isinstance(dtype, str):
            return dtype
        key = dtype.lower()
        if key == "auto":
            if self.device.type == "cuda":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.bfloat16 if cpu_supports_bf16() else torch.float32
        if key not in _DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not known; expected 'auto' or one of {sorted(set(_DTYPES))}")
        return getattr(torch, _DTYPES[key])

    def _croppable_cache(self) -> bool:
        # Sliding-window and recurrent layers cannot be cut at an arbitrary token: no sharing.
        cfg = self.model.config.get_text_config(decoder=True) if hasattr(self.model.config, "get_text_config") else self.model.config
        layer_types = getattr(cfg, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            return False
        return not getattr(cfg, "sliding_window", None) or not getattr(cfg, "use_sliding_window", True)

    def __repr__(self) -> str:
        return (
            f"TransformersBackend(model={self.model_name!r}, device={str(self.device)!r}, "
            f"dtype={str(self.dtype).replace('torch.', '')}, share_prefix={self.share_prefix}, "
            f"cached_prefixes={len(self._lru)})"
        )

    # ------------------------------------------------------------------ text -> tokens
    def render(self, prompt: Prompt) -> str:
        """The exact text fed to the model (see :class:`ChatPromptEncoder`)."""
        return self.encoder.render(prompt)

    def encode(self, prompts: list[Prompt]) -> list[list[int]]:
        """Token ids of each rendered prompt."""
        return self.encoder.encode(prompts)

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        """Token length of each rendered prompt."""
        return [len(ids) for ids in self.encode(prompts)]

    def _check_lengths(self, prompts: list[Prompt], ids: list[list[int]], extra: int = 0) -> None:
        for prompt, row in zip(prompts, ids):
            if len(row) + extra > self.context_length:
                need = f"{len(row)} tokens" + (f" + {extra} to generate" if extra else "")
                raise BackendError(
                    f"scene {prompt.scene_id!r}: the prompt is {need}, but model {self.model_name!r} takes at most "
                    f"{self.context_length} tokens; shorten the history (fewer items), or pass truncate_history=True "
                    "to UserSimulator to drop the oldest history lines"
                )

    def letter_token_ids(self, prompt_text_tail: str, letters: tuple[str, ...]) -> list[int]:
        """Token id of each letter right after ``prompt_text_tail``, verified on the tokenizer.

        Raises:
            BackendError: the tokenizer merges or splits a letter.
        """
        return self.encoder.letter_token_ids(prompt_text_tail, letters)

    # ------------------------------------------------------------------ scoring
    def letter_logprobs(self, prompts: list[Prompt], letters: list[list[str]]) -> list[np.ndarray]:
        """Renormalised log-probabilities of the given letters as the next token (see module doc)."""
        if len(prompts) != len(letters):
            raise ConfigError(f"got {len(prompts)} prompts but {len(letters)} letter lists")
        if not prompts:
            return []
        ids = self.encode(prompts)
        self._check_lengths(prompts, ids)
        letter_ids = [self.encoder.letter_ids_for(prompt, lets) for prompt, lets in zip(prompts, letters)]
        last = self.last_logits(ids)
        out = []
        for row, lid in zip(last, letter_ids):
            out.append(renormalise_logprobs(row[lid].astype(np.float64)))
        return out

    def last_logits(self, ids: list[list[int]], share_prefix: bool | None = None) -> np.ndarray:
        """Logits (float32, shape ``(len(ids), vocab)``) at the last position of each sequence."""
        share = self.share_prefix if share_prefix is None else share_prefix
        share = share and self._can_share
        self.stats.prompts += len(ids)
        self.stats.prompt_tokens += sum(len(r) for r in ids)
        if not share:
            return self._plain(ids)
        rows: list[np.ndarray | None] = [None] * len(ids)
        # Consecutive prompts of the same request (thoughts of one scene) are scored together,
        # so their long common prefix is computed once.
        for group in self._groups(ids):
            for idx, logits in zip(group, self._shared([ids[i] for i in group])):
                rows[idx] = logits
        return np.stack(rows)  # type: ignore[arg-type]

    @staticmethod
    def _groups(ids: list[list[int]]) -> list[list[int]]:
        arrays = [np.asarray(r) for r in ids]
        whole_common = _common_prefix(arrays)
        groups: list[list[int]] = [[0]]
        for i in range(1, len(ids)):
            prev = groups[-1][0]
            # same group when this row shares much more with its neighbour than with the batch
            pair = _common_prefix([arrays[prev], arrays[i]])
            if pair >= whole_common + 64:
                groups[-1].append(i)
            else:
                groups.append([i])
        if all(len(g) == 1 for g in groups):
            return [list(range(len(ids)))]
        return groups

    def _forward(self, input_ids, attention_mask, position_ids, keep, cache=None, use_cache=True):
        torch = self._torch
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": use_cache,
            "logits_to_keep": keep,
        }
        if cache is not None:
            kwargs[self._cache_kw] = cache
        with torch.inference_mode():
            out = self.model(**kwargs)
        return out.logits, (getattr(out, self._cache_kw, None) if use_cache else None)

    def _pad(self, rows: list[list[int]]):
        torch = self._torch
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _plain(self, ids: list[list[int]], remember: bool = False) -> np.ndarray:
        """One right-padded batched forward; logits only at each row's last token."""
        torch = self._torch
        input_ids, mask = self._pad(ids)
        lengths = torch.tensor([len(r) for r in ids], device=self.device)
        positions = torch.arange(input_ids.shape[1], device=self.device).unsqueeze(0).expand_as(input_ids)
        remember = remember and self._lru.max_entries > 0 and self.remember_rows
        logits, cache = self._forward(input_ids, mask, positions, lengths - 1, cache=None, use_cache=remember)
        self.stats.computed_tokens += sum(len(r) for r in ids)
        if remember:
            self._remember_rows([np.asarray(r, dtype=np.int64) for r in ids], cache)
        rng = torch.arange(len(ids), device=self.device)
        return logits[rng, rng].float().cpu().numpy()

    def _cache_from(self, layers: list[tuple[Any, Any]], batch: int):
        from transformers import DynamicCache

        pairs = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in layers]
        return DynamicCache(pairs)

    @staticmethod
    def _layers_of(cache) -> list[tuple[Any, Any]]:
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _prefix_layers(self, prefix: np.ndarray) -> list[tuple[Any, Any]] | None:
        """KV cache (batch 1) of ``prefix``, reusing the longest cached common prefix."""
        torch = self._torch
        p = len(prefix)
        have, key = self._lru.best(prefix, p)
        if key is not None and have == p:
            self.stats.cache_hits += 1
            return self._lru.get(key, p)
        cache = None
        start = 0
        if key is not None and have >= _MIN_SHARED_PREFIX:
            self.stats.cache_hits += 1
            cache = self._cache_from(self._lru.get(key, have), 1)
            start = have
        rest = torch.tensor(prefix[start:], dtype=torch.long, device=self.device).unsqueeze(0)
        mask = torch.ones((1, p), dtype=torch.long, device=self.device)
        positions = torch.arange(start, p, device=self.device).unsqueeze(0)
        _, cache = self._forward(rest, mask, positions, 1, cache=cache)
        self.stats.computed_tokens += p - start
        layers = self._layers_of(cache)
        self._lru.put(prefix, layers)
        return layers

    def _shared(self, rows: list[list[int]]) -> list[np.ndarray]:
        arrays = [np.asarray(r, dtype=np.int64) for r in rows]
        p = min(_common_prefix(arrays), min(len(a) for a in arrays) - 1)
        # Rows whose own earlier request (e.g. the previous env step) is cached well beyond
        # the batch prefix go alone, continuing from their cached prefix.
        solo, batched = [], []
        if self._lru.max_entries > 0:
            for i, a in enumerate(arrays):
                have, _ = self._lru.best(a, len(a) - 1)
                (solo if have >= max(p, 0) + _MIN_ROW_GAIN else batched).append(i)
        else:
            batched = list(range(len(arrays)))
        out: list[np.ndarray | None] = [None] * len(arrays)
        for i in solo:
            out[i] = self._suffix_batch([arrays[i]], len(arrays[i]) - 1)[0]
        if batched:
            sub = [arrays[i] for i in batched]
            sub_p = min(_common_prefix(sub), min(len(a) for a in sub) - 1)
            for i, logits in zip(batched, self._suffix_batch(sub, sub_p)):
                out[i] = logits
        return out  # type: ignore[return-value]

    def _suffix_batch(self, arrays: list[np.ndarray], p: int) -> list[np.ndarray]:
        """Score rows sharing their first ``p`` tokens: prefix KV once, suffixes batched."""
        torch = self._torch
        if p < _MIN_SHARED_PREFIX:
            return list(self._plain([a.tolist() for a in arrays], remember=True))
        layers = self._prefix_layers(arrays[0][:p])
        suffixes = [a[p:].tolist() for a in arrays]
        input_ids, suffix_mask = self._pad(suffixes)
        b, s = input_ids.shape
        mask = torch.cat([torch.ones((b, p), dtype=torch.long, device=self.device), suffix_mask], dim=1)
        positions = (torch.arange(s, device=self.device) + p).unsqueeze(0).expand(b, s)
        keep = torch.tensor([len(x) - 1 for x in suffixes], device=self.device)
        logits, cache = self._forward(input_ids, mask, positions, keep, cache=self._cache_from(layers, b))
        self.stats.computed_tokens += sum(len(x) for x in suffixes)
        self._remember_rows(arrays, cache)
        rng = torch.arange(b, device=self.device)
        return list(logits[rng, rng].float().cpu().numpy())

    # ------------------------------------------------------------------ likelihood mode
    def continuation_logprobs(self, prompts: list[Prompt], continuations: list[list[str]]) -> list[SequenceScores]:
        """Log-likelihood of each continuation text right after each prompt (likelihood mode).

        The K continuations of a prompt share its tokens: with ``share_prefix`` the prompt is
        computed once (or found in the prefix cache) and only the continuation tokens are
        computed per option. Equal to scoring every sequence on its own to float rounding.
        """
        if len(prompts) != len(continuations):
            raise ConfigError(f"got {len(prompts)} prompts but {len(continuations)} continuation lists")
        out = []
        for prompt, texts in zip(prompts, continuations):
            rows, starts = self.encoder.encode_continuations(prompt, list(texts))
            self._check_lengths([prompt] * len(rows), rows)
            sums = self.sequence_logprobs(rows, starts)
            out.append(SequenceScores(sums, np.array([len(r) - s for r, s in zip(rows, starts)], dtype=np.int64)))
        return out

    def sequence_logprobs(self, rows: list[list[int]], starts: list[int], share_prefix: bool | None = None) -> np.ndarray:
        """``sum_{j >= starts[i]} log P(rows[i][j] | rows[i][:j])`` for each row (float64)."""
        if len(rows) != len(starts):
            raise ConfigError(f"got {len(rows)} rows but {len(starts)} start positions")
        if any(not 1 <= s < len(r) for r, s in zip(rows, starts)):
            raise ConfigError("each start must lie inside its row and after its first token")
        share = (self.share_prefix if share_prefix is None else share_prefix) and self._can_share
        self.stats.prompts += len(rows)
        self.stats.prompt_tokens += sum(len(r) for r in rows)
        arrays = [np.asarray(r, dtype=np.int64) for r in rows]
        # The prefix may reach up to the token before the first scored one: its logits come
        # from the suffix pass.
        p = min(_common_prefix(arrays), min(starts) - 1) if share else 0
        if p < _MIN_SHARED_PREFIX:
            return self._sequence_pass(arrays, starts, 0, None)
        return self._sequence_pass(arrays, starts, p, self._prefix_layers(arrays[0][:p]))

    def _sequence_pass(self, arrays: list[np.ndarray], starts: list[int], p: int, layers) -> np.ndarray:
        """One batched forward over ``arrays[i][p:]`` (after the cached prefix ``layers`` of ``p`` tokens)."""
        torch = self._torch
        suffixes = [a[p:].tolist() for a in arrays]
        input_ids, suffix_mask = self._pad(suffixes)
        b, width = input_ids.shape
        if layers is not None:
            mask = torch.cat([torch.ones((b, p), dtype=torch.long, device=self.device), suffix_mask], dim=1)
            cache = self._cache_from(layers, b)
        else:
            mask, cache = suffix_mask, None
        positions = (torch.arange(width, device=self.device) + p).unsqueeze(0).expand(b, width)
        # logits only from the first position that predicts a scored token
        first = min(starts) - 1 - p
        logits, _ = self._forward(input_ids, mask, positions, width - first, cache=cache, use_cache=False)
        self.stats.computed_tokens += sum(len(x) for x in suffixes)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        out = np.zeros(b, dtype=np.float64)
        for i, (a, start) in enumerate(zip(arrays, starts)):
            # position q (absolute) predicts token q + 1; keep q in [start - 1, len - 2]
            at = torch.arange(start - 1, len(a) - 1, device=self.device) - p - first
            targets = torch.as_tensor(a[start:], device=self.device)
            out[i] = float(logprobs[i, at, targets].double().sum())
        return out

    def prompt_logprobs(self, rows: list[list[int]]) -> list[np.ndarray]:
        """``log P(row[j] | row[:j])`` for every token ``j >= 1`` of each row (float64, ``len(row) - 1``).

        What an OpenAI ``echo`` request returns (the scoring service answers it with this). One
        forward per row: the full-vocabulary logits of every position of a batch would not fit.
        """
        torch = self._torch
        out = []
        for row in rows:
            input_ids = torch.as_tensor([row], dtype=torch.long, device=self.device)
            positions = torch.arange(len(row), device=self.device).unsqueeze(0)
            mask = torch.ones_like(input_ids)
            logits, _ = self._forward(input_ids, mask, positions, 0, use_cache=False)  # 0: every position
            self.stats.computed_tokens += len(row)
            logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
            targets = input_ids[0, 1:]
            out.append(logprobs[torch.arange(len(row) - 1, device=self.device), targets].double().cpu().numpy())
        return out

    def _remember_rows(self, arrays: list[np.ndarray], cache) -> None:
        # Keep each row's own KV so a follow-up request of the same session (same profile and
        # history, one more item) continues from it.
        if cache is None or not self.remember_rows:
            return
        self._cache_rows(arrays, cache, [0] * len(arrays))

    def _cache_rows(self, arrays: list[np.ndarray], cache, starts: list[int]) -> None:
        """Put row ``i``'s KV (batch columns ``starts[i]`` onwards, cloned) in the LRU under ``arrays[i]``."""
        if self._lru.max_entries <= 0:
            return
        layers = self._layers_of(cache)
        for i, (a, s) in enumerate(zip(arrays, starts)):
            end = s + len(a)
            self._lru.put(a, [(k[i : i + 1, :, s:end].clone(), v[i : i + 1, :, s:end].clone()) for k, v in layers])

    def clear_cache(self) -> None:
        """Forget every cached prefix."""
        self._lru.clear()

    # ------------------------------------------------------------------ generation
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

        Sampling uses a private torch RNG seeded with ``seed``, so the same batch with the same
        seed gives the same texts (the caller's global RNG state is left alone).
        """
        if not prompts:
            return []
        if n < 1:
            raise ConfigError(f"n (thoughts per prompt) must be >= 1, got {n}")
        ids = self.encode(prompts)
        self._check_lengths(prompts, ids, extra=max_tokens)
        return self.generate_ids(ids, n, temperature, top_p, max_tokens, stop, seed)

    def generate_ids(self, ids: list[list[int]], n: int, temperature: float, top_p: float, max_tokens: int,
                     stop: list[str], seed: int) -> list[list[str]]:
        """:meth:`generate` on prompts already tokenised (the scoring service receives text)."""
        torch = self._torch
        width = max(len(r) for r in ids)
        # generate() continues every row from the same last column: pad on the left.
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, r in enumerate(ids):
            input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        sample = temperature > 0
        kwargs: dict[str, Any] = dict(max_new_tokens=max_tokens, do_sample=sample, pad_token_id=self.pad_id)
        if sample:
            kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
        if stop:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList([_make_text_stop(self.tokenizer, list(stop), width)])
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        if self._can_share and self.share_prefix:
            # generate(num_return_sequences=n) would read each prompt n times; on CPU that
            # prefill is most of the cost. Read it once, then copy the KV cache n times.
            kwargs[self._cache_kw] = self._prefill(input_ids, mask, n, ids)
            input_ids, mask = input_ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        else:
            kwargs["num_return_sequences"] = n
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(int(seed))
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        new = out[:, width:].cpu()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        result = []
        for i in range(len(ids)):
            result.append([cut_at_stop(t, stop) for t in texts[i * n : (i + 1) * n]])
        return result

    def _prefill(self, input_ids, mask, n: int, ids: list[list[int]]):
        """KV cache of every left-padded prompt but its last token, repeated ``n`` times per row.

        Each prompt's own KV also goes to the prefix LRU: in decision mode the thoughts are
        scored right after, on prompts that start with this one, which then only compute the
        thought and the behaviour suffix.
        """
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        _, cache = self._forward(input_ids[:, :-1], mask[:, :-1], positions[:, :-1], 1)
        width = input_ids.shape[1]
        self._cache_rows([np.asarray(r[:-1], dtype=np.int64) for r in ids], cache, [width - len(r) for r in ids])
        if n > 1:
            cache.batch_repeat_interleave(n)
        return cache


def _make_text_stop(tokenizer, stop: list[str], prompt_width: int):
    """A stopping criterion that ends a row once its generated text contains a stop string.

    transformers' own ``stop_strings`` precomputes tables over the whole vocabulary on every
    call (about a second for a 49k vocabulary); decoding the last few generated tokens per row
    is cheaper for the short stop strings used here.
    """
    from transformers import StoppingCriteria

    window = 4 + max(len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in stop)

    class _TextStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            import torch

            tails = input_ids[:, max(prompt_width, input_ids.shape[1] - window) :].tolist()
            texts = tokenizer.batch_decode(tails, skip_special_tokens=True)
            done = [any(x in t for x in stop) for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return _TextStop()



def _common_prefix(arrays: list[np.ndarray]) -> int:
    """Length of the token prefix shared by all arrays."""
    if not arrays:
        return 0
    first = arrays[0]
    n = min(len(a) for a in arrays)
    common = n
    for a in arrays[1:]:
        diff = np.flatnonzero(first[:common] != a[:common])
        if diff.size:
            common = int(diff[0])
        if common == 0:
            break
    return common
