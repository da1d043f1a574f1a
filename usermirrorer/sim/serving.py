"""The CPU scoring service: one transformers model behind an OpenAI-compatible endpoint (DESIGN.md §9).

Many environment workers, one model: ``usermirrorer serve --model M --port P`` loads the
:class:`~usermirrorer.sim.backends.transformers_backend.TransformersBackend` once and answers
``POST /v1/completions`` in the shape ``vllm serve`` answers it, so the **same client** — our
``openai`` backend (``backend="openai", backend_kwargs={"base_url": ..., "vllm_extensions":
True}``) — scores through ``vllm serve`` on a GPU node and through this service on CPU.

**Batching.** Scoring requests (``max_tokens=1``, ``n=1``) wait in a queue for at most
``batch_window_s`` after the first one arrives (or until ``max_batch`` are waiting); the batch is
then scored with one batched forward (:meth:`TransformersBackend.last_logits`, which computes
the batch's shared prefix — the system prompt — once). So requests of all workers and all their
sub-envs share a forward pass. Generation requests (decision mode's thoughts) carry a seed each
and run one at a time, after the scoring batch in flight; the model runs in a single thread, so
batches never compete for the cores.

**What is answered.** The full-vocabulary log-softmax at the last prompt position (after a
``logit_bias``, as OpenAI applies it); the top ``logprobs`` tokens, plus every id of vLLM's
``logprob_token_ids`` extension (so the option letters always come back, never floored);
``allowed_token_ids`` restricts the returned token; ``return_tokens_as_token_ids`` keys tokens
``token_id:<id>``. ``echo=True`` with ``max_tokens=0`` (likelihood mode: a scene's K option
sequences in one request) returns the log-probability of every prompt token, one forward per
sequence, run in the model thread like everything else. The prompt is a string (tokenised
with ``add_special_tokens=False``: the client rendered the chat template, exactly as the
in-process backend encodes it) or a list of token ids. ``GET /v1/models`` and ``GET /health`` answer as vLLM's do.

Why Starlette on Uvicorn: it is what ``vllm serve`` itself runs on (FastAPI is Starlette plus
request models we do not need), it is small, maintained and async, so requests queue while a
forward runs; Ray Serve (``@serve.batch``) would do the same batching but makes a CPU box run a
Ray cluster for one model. ``pip install 'usermirrorer[serve]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from usermirrorer.errors import BackendError, ConfigError, MissingDependency
from usermirrorer.sim.backends.base import renormalise_logprobs

__all__ = ["ScoringService", "ServiceStats", "build_app", "serve", "RunningServer", "start_server"]


@dataclass
class ServiceStats:
    """What the service did: requests, batches and how full they were."""

    scoring_requests: int = 0
    generation_requests: int = 0
    echo_requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    batch_sizes: list[int] = field(default_factory=list, repr=False)

    @property
    def mean_batch(self) -> float:
        return float(np.mean(self.batch_sizes)) if self.batch_sizes else 0.0


class _BadRequest(Exception):
    """A request the service refuses with HTTP 400 (its message says why)."""


class ScoringService:
    """Batches completion requests of many clients into shared forward passes.

    Args:
        backend: a loaded :class:`~usermirrorer.sim.backends.transformers_backend.TransformersBackend`.
        served_model_name: the model name clients send (requests for another name get 404).
        batch_window_s: how long the first waiting scoring request waits for others.
        max_batch: most scoring requests in one forward pass.
    """

    def __init__(self, backend: Any, served_model_name: str, *, batch_window_s: float = 0.005, max_batch: int = 64):
        if batch_window_s < 0:
            raise ConfigError(f"batch window must be >= 0 seconds, got {batch_window_s}")
        if max_batch < 1:
            raise ConfigError(f"max batch must be >= 1, got {max_batch}")
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.served_model_name = served_model_name
        self.batch_window_s = float(batch_window_s)
        self.max_batch = int(max_batch)
        self.stats = ServiceStats()
        # one model thread: forward passes run one after another, never on shared cores at once
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usermirrorer-model")
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._batches())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._model_thread.shutdown(wait=True)

    # ------------------------------------------------------------------ requests
    async def complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One ``/v1/completions`` request body -> its response body.

        Raises:
            _BadRequest: a malformed request (HTTP 400).
            LookupError: another model name (HTTP 404).
        """
        model = body.get("model")
        if model != self.served_model_name:
            raise LookupError(f"The model `{model}` does not exist; this server serves {self.served_model_name!r}")
        if body.get("echo"):
            return await self._echo(body)
        ids = self._prompt_ids(body.get("prompt"))
        n = _int(body, "n", 1)
        max_tokens = _int(body, "max_tokens", 16)
        if n < 1 or max_tokens < 1:
            raise _BadRequest(f"n and max_tokens must be >= 1, got n={n}, max_tokens={max_tokens}")
        context = self.backend.context_length
        if len(ids) + max_tokens > context:
            raise _BadRequest(f"the prompt is {len(ids)} tokens + {max_tokens} to generate, but the model takes at "
                              f"most {context} tokens; shorten the prompt")
        if max_tokens == 1 and n == 1:
            self.stats.scoring_requests += 1
            future = asyncio.get_running_loop().create_future()
            await self._queue.put((ids, future))
            logits = await future
            choices = [self._scored_choice(logits, body)]
        else:
            self.stats.generation_requests += 1
            texts = await asyncio.get_running_loop().run_in_executor(self._model_thread, self._generate, ids, body, n,
                                                                    max_tokens)
            choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": "stop"} for i, t in enumerate(texts)]
        return self._reply(choices, len(ids), n * max_tokens)

    async def _echo(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``echo=True, max_tokens=0``: the log-probability of every prompt token (likelihood mode).

        ``prompt`` may be one prompt or a list of them (token-id lists or strings); one choice
        per prompt, ``token_logprobs[0]`` None (nothing predicts the first token), as vLLM does.
        """
        if _int(body, "max_tokens", 16) != 0:
            raise _BadRequest("echo is served for scoring only: send max_tokens=0 with echo=true")
        prompt = body.get("prompt")
        many = isinstance(prompt, list) and prompt and all(isinstance(p, (list, str)) for p in prompt)
        rows = [self._prompt_ids(p) for p in (prompt if many else [prompt])]
        context = self.backend.context_length
        if any(len(r) > context for r in rows):
            raise _BadRequest(f"a prompt is {max(len(r) for r in rows)} tokens, but the model takes at most {context}")
        self.stats.echo_requests += 1
        values = await asyncio.get_running_loop().run_in_executor(self._model_thread, self.backend.prompt_logprobs, rows)
        choices = []
        for i, (row, lp) in enumerate(zip(rows, values)):
            tokens = [self.tokenizer.decode([t]) for t in row]
            choices.append({"index": i, "text": "".join(tokens), "finish_reason": "length",
                            "logprobs": {"tokens": tokens, "token_logprobs": [None, *map(float, lp)],
                                         "top_logprobs": None, "text_offset": list(range(len(row)))}})
        return self._reply(choices, sum(len(r) for r in rows), 0)

    def _reply(self, choices: list[dict[str, Any]], prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """A completions response body around ``choices``."""
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.served_model_name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def _prompt_ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, str) and prompt:
            return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        raise _BadRequest(f"'prompt' must be a non-empty string or a list of token ids (one prompt per request), "
                          f"got {type(prompt).__name__}")

    async def _batches(self) -> None:
        """Collect scoring requests for one window, score them in one forward, answer each."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.batch_window_s
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            self.stats.batch_sizes.append(len(batch))
            try:
                logits = await loop.run_in_executor(self._model_thread, self.backend.last_logits, [b[0] for b in batch])
            except Exception as exc:  # every waiting request learns why its batch failed
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), row in zip(batch, logits):
                if not future.done():
                    future.set_result(row)

    def _scored_choice(self, logits: np.ndarray, body: Mapping[str, Any]) -> dict[str, Any]:
        row = np.asarray(logits, dtype=np.float64).copy()
        bias = body.get("logit_bias") or {}
        if not isinstance(bias, dict):
            raise _BadRequest("'logit_bias' must map token ids to numbers")
        for token, value in bias.items():
            row[_token_id(token, len(row))] += float(value)
        logprobs = renormalise_logprobs(row)  # log-softmax over the vocabulary, after the bias
        allowed = body.get("allowed_token_ids")
        pick_from = np.array([_token_id(t, len(row)) for t in allowed]) if allowed else np.arange(len(row))
        token = int(pick_from[np.argmax(logprobs[pick_from])])  # temperature 0: the scoring requests' setting
        k = _int(body, "logprobs", 0) or 0
        listed = [int(t) for t in np.argsort(-logprobs, kind="stable")[:k]]
        listed += [_token_id(t, len(row)) for t in body.get("logprob_token_ids") or [] if int(t) not in listed]
        as_ids = bool(body.get("return_tokens_as_token_ids"))

        def key(t: int) -> str:
            return f"token_id:{t}" if as_ids else self.tokenizer.decode([t])

        top = {key(t): float(logprobs[t]) for t in listed}
        return {"index": 0, "text": self.tokenizer.decode([token]), "finish_reason": "length",
                "logprobs": {"tokens": [key(token)], "token_logprobs": [float(logprobs[token])],
                             "top_logprobs": [top] if k or listed else None, "text_offset": [0]}}

    def _generate(self, ids: list[int], body: Mapping[str, Any], n: int, max_tokens: int) -> list[str]:
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        return self.backend.generate_ids([ids], n, float(body.get("temperature", 1.0)), float(body.get("top_p", 1.0)),
                                         max_tokens, stop, _int(body, "seed", 0))[0]


def _int(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"{name!r} must be an integer, got {value!r}")
    return value


def _token_id(token: Any, vocab: int) -> int:
    try:
        t = int(token)
    except (TypeError, ValueError):
        raise _BadRequest(f"token ids must be integers, got {token!r}") from None
    if not 0 <= t < vocab:
        raise _BadRequest(f"token id {t} is outside the vocabulary (0..{vocab - 1})")
    return t


def build_app(service: ScoringService) -> Any:
    """The Starlette app of a :class:`ScoringService` (``/v1/completions``, ``/v1/models``, ``/health``)."""
    try:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route
    except ImportError as exc:
        raise MissingDependency("starlette", "serve") from exc

    def error(status: int, message: str, kind: str) -> Any:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    async def completions(request: Any) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not JSON", "BadRequestError")
        if not isinstance(body, dict):
            return error(400, "the request body must be a JSON object", "BadRequestError")
        try:
            return JSONResponse(await service.complete(body))
        except _BadRequest as exc:
            return error(400, str(exc), "BadRequestError")
        except LookupError as exc:
            return error(404, str(exc), "NotFoundError")
        except BackendError as exc:
            return error(400, str(exc), "BadRequestError")

    async def models(request: Any) -> Any:
        return JSONResponse({"object": "list", "data": [
            {"id": service.served_model_name, "object": "model", "owned_by": "usermirrorer",
             "max_model_len": service.backend.context_length}]})

    async def health(request: Any) -> Any:
        return Response(status_code=200)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        await service.start()
        yield
        await service.stop()

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"]),
                             Route("/health", health, methods=["GET"])],
                     lifespan=lifespan)


def _service(model: str, served_model_name: str | None, batch_window_s: float, max_batch: int,
             backend_kwargs: Mapping[str, Any] | None) -> ScoringService:
    from usermirrorer.sim.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(model, **dict(backend_kwargs or {}))
    return ScoringService(backend, served_model_name or model, batch_window_s=batch_window_s, max_batch=max_batch)


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingDependency("uvicorn", "serve") from exc
    return uvicorn


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, served_model_name: str | None = None,
          batch_window_s: float = 0.005, max_batch: int = 64, backend_kwargs: Mapping[str, Any] | None = None,
          log_level: str = "warning") -> None:
    """Load ``model`` once and serve it until interrupted (``usermirrorer serve``).

    Args:
        model: registry name, folder or hub id (the transformers backend loads it).
        host, port: where to listen.
        served_model_name: the name clients send as ``model`` (default: ``model``).
        batch_window_s, max_batch: see :class:`ScoringService`.
        backend_kwargs: :class:`~usermirrorer.sim.backends.transformers_backend.TransformersBackend`
            arguments (``dtype``, ``num_threads``, ``device`` ...).
    """
    uvicorn = _uvicorn()
    service = _service(model, served_model_name, batch_window_s, max_batch, backend_kwargs)
    uvicorn.run(build_app(service), host=host, port=port, log_level=log_level)


@dataclass
class RunningServer:
    """A scoring service running in a background thread of this process (tests, benchmarks)."""

    service: ScoringService
    url: str
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(model: str | None = None, *, service: ScoringService | None = None, host: str = "127.0.0.1",
                 port: int = 0, served_model_name: str | None = None, batch_window_s: float = 0.005,
                 max_batch: int = 64, backend_kwargs: Mapping[str, Any] | None = None,
                 timeout_s: float = 60.0) -> RunningServer:
    """Start a scoring service in a background thread; returns once it accepts requests.

    Args:
        model: what to load (or pass a ready ``service``).
        port: 0 picks a free port; the chosen one is in ``.url``.
        timeout_s: how long to wait for the server to come up.

    Raises:
        ConfigError: neither ``model`` nor ``service``.
        BackendError: the server did not start within ``timeout_s``.
    """
    if service is None:
        if model is None:
            raise ConfigError("start_server needs a model to load or a ready service=")
        service = _service(model, served_model_name, batch_window_s, max_batch, backend_kwargs)
    uvicorn = _uvicorn()
    config = uvicorn.Config(build_app(service), host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="usermirrorer-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise BackendError(f"the scoring service did not start on {host}:{port} within {timeout_s:g} s "
                               "(is the port taken?)")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(service=service, url=f"http://{host}:{bound}/v1", _server=server, _thread=thread)
