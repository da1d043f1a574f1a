"""OpenAI backend plumbing that needs no model server: batch files, retries, refusals.

Retries and refusals are exercised with the real ``openai`` client against a small local HTTP
server that answers with scripted statuses (a 503 storm, a 400 with a message) and, when it
finally succeeds, with a completions body in the OpenAI wire format.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from backend_fixtures import HAS_VLLM, movie_scene

from usermirrorer.errors import BackendError, DataError, MissingDependency
from usermirrorer.sim.backends.openai_backend import OpenAIBackend, read_batch_jsonl, write_batch_jsonl
from usermirrorer.sim.prompts import build_prompt


@pytest.fixture(scope="module")
def offline_backend(tiny_model_dir):
    # Nothing listens on port 9: only file IO and rendering are used.
    return OpenAIBackend("tiny", base_url="http://127.0.0.1:9/v1", tokenizer=str(tiny_model_dir), max_retries=0)


@pytest.fixture
def prompts():
    return [build_prompt(movie_scene(i, k), "direct") for i, k in enumerate([3, 5, 4])]


def test_letter_batch_requests_round_trip(offline_backend, prompts, tmp_path):
    path = offline_backend.to_batch_jsonl(prompts, tmp_path / "req.jsonl", letters=[list(p.letters) for p in prompts])
    records = read_batch_jsonl(path)
    assert [line for line, _ in records] == [1, 2, 3]
    for (_, rec), prompt in zip(records, prompts):
        assert rec["method"] == "POST" and rec["url"] == "/v1/completions"
        body = rec["body"]
        assert body["prompt"] == offline_backend.encoder.render(prompt)
        assert body["prompt"].endswith("<|im_start|>assistant\nBehavior: [")
        assert (body["model"], body["max_tokens"], body["temperature"], body["logprobs"]) == ("tiny", 1, 0.0, 20)
        index, kind, ids, scene = rec["custom_id"].split("|", 3)
        assert kind == "letters" and scene == prompt.scene_id
        assert [int(x) for x in ids.split(",")] == offline_backend.encoder.letter_ids_for(prompt, prompt.letters)


def test_generation_batch_requests_carry_own_seeds(offline_backend, prompts, tmp_path):
    path = offline_backend.to_batch_jsonl(prompts, tmp_path / "gen.jsonl", n=4, temperature=0.7, top_p=0.8,
                                          max_tokens=64, stop=["Behavior: ["], seed=11)
    bodies = [rec["body"] for _, rec in read_batch_jsonl(path)]
    assert {(b["n"], b["temperature"], b["top_p"], b["max_tokens"]) for b in bodies} == {(4, 0.7, 0.8, 64)}
    assert all(b["stop"] == ["Behavior: ["] for b in bodies)
    assert len({b["seed"] for b in bodies}) == len(bodies)
    again = offline_backend.to_batch_jsonl(prompts, tmp_path / "gen2.jsonl", n=4, temperature=0.7, top_p=0.8,
                                           max_tokens=64, stop=["Behavior: ["], seed=11)
    assert again.read_text() == path.read_text()


def _output_line(request: dict, top: dict[str, float]) -> dict:
    """A Batch output line in OpenAI's format answering ``request`` with one token's top list."""
    body = {"object": "text_completion", "model": request["body"]["model"],
            "choices": [{"index": 0, "text": "A", "finish_reason": "length",
                         "logprobs": {"tokens": ["A"], "token_logprobs": [-1.0], "top_logprobs": [top]}}]}
    return {"id": "batch_req_" + request["custom_id"].split("|")[0], "custom_id": request["custom_id"],
            "response": {"status_code": 200, "request_id": "r", "body": body}, "error": None}


def test_batch_output_parsed_in_request_order_with_floor(offline_backend, prompts, tmp_path):
    req = offline_backend.to_batch_jsonl(prompts, tmp_path / "req.jsonl", letters=[list(p.letters) for p in prompts])
    requests = [rec for _, rec in read_batch_jsonl(req)]
    tops = [
        {"A": -1.0, "B": -2.0, "C": -3.0, " The": -0.1},
        {"A": -0.5, "B": -1.5, "C": -2.5, "D": -3.5, "E": -4.0},
        {"A": -1.0, "B": -1.0, "C": -2.0, "x": -6.0},  # D missing: floored at -6.0
    ]
    lines = [_output_line(r, t) for r, t in zip(requests, tops)]
    out = tmp_path / "out.jsonl"
    out.write_text("\n".join(json.dumps(x) for x in reversed(lines)) + "\n")  # outputs may come in any order
    got = offline_backend.from_batch_jsonl(out, n_requests=3)
    expected = [[-1, -2, -3], [-0.5, -1.5, -2.5, -3.5, -4.0], [-1, -1, -2, -6.0]]
    for lp, raw in zip(got, expected):
        raw = np.asarray(raw, dtype=float)
        np.testing.assert_allclose(np.exp(lp), np.exp(raw) / np.exp(raw).sum(), atol=1e-12)
    assert offline_backend.stats.missing_letters >= 1


def test_batch_output_problems_name_file_and_line(offline_backend, prompts, tmp_path):
    req = offline_backend.to_batch_jsonl(prompts, tmp_path / "req.jsonl", letters=[list(p.letters) for p in prompts])
    requests = [rec for _, rec in read_batch_jsonl(req)]
    good = _output_line(requests[0], {"A": -1.0, "B": -2.0, "C": -3.0})
    failed = {"id": "x", "custom_id": requests[1]["custom_id"], "response": None,
              "error": {"code": "rate_limit", "message": "too many tokens"}}
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(good) + "\n" + json.dumps(failed) + "\n")
    with pytest.raises(DataError) as err:
        offline_backend.from_batch_jsonl(out, n_requests=3)
    assert f"{out}:2: error:" in str(err.value) and "too many tokens" in str(err.value)
    out.write_text(json.dumps(good) + "\n")
    with pytest.raises(DataError, match=r"requests \[1, 2\] have no result line"):
        offline_backend.from_batch_jsonl(out, n_requests=3)
    out.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match=":2: not valid JSON"):
        offline_backend.from_batch_jsonl(out)


def test_write_batch_rejects_repeated_ids(tmp_path):
    from usermirrorer.errors import ConfigError

    req = {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {}}
    with pytest.raises(ConfigError, match="repeated"):
        write_batch_jsonl([req, req], tmp_path / "x.jsonl")


class _ScriptedServer:
    """Answers POST /v1/completions with the next (status, json) of a script, counting calls."""

    def __init__(self, script: list[tuple[int, dict]]):
        self.script = list(script)
        self.calls = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload = owner.script[min(owner.calls, len(owner.script) - 1)]
                owner.calls += 1
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


_COMPLETION = {
    "id": "cmpl-1", "object": "text_completion", "created": 0, "model": "tiny",
    "choices": [{"index": 0, "text": "B", "finish_reason": "length",
                 "logprobs": {"tokens": ["B"], "token_logprobs": [-0.7], "top_logprobs": [{"B": -0.7, "A": -1.2, "C": -2.3}]}}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
}


def test_transient_errors_are_retried(tiny_model_dir, prompts):
    busy = (503, {"error": {"message": "server overloaded"}})
    with _ScriptedServer([busy, (429, {"error": {"message": "slow down"}}), (200, _COMPLETION)]) as server:
        backend = OpenAIBackend("tiny", base_url=server.url, tokenizer=str(tiny_model_dir), backoff_s=0.01, max_retries=3)
        [lp] = backend.letter_logprobs(prompts[:1], [["A", "B", "C"]])
    raw = np.array([-1.2, -0.7, -2.3])
    np.testing.assert_allclose(np.exp(lp), np.exp(raw) / np.exp(raw).sum(), atol=1e-12)
    assert server.calls == 3 and backend.stats.retries == 2 and backend.stats.prompt_tokens == 100


def test_refusal_raises_with_server_message_without_retry(tiny_model_dir, prompts):
    with _ScriptedServer([(400, {"error": {"message": "This model's maximum context length is 2048 tokens"}})]) as server:
        backend = OpenAIBackend("tiny", base_url=server.url, tokenizer=str(tiny_model_dir), backoff_s=0.01)
        with pytest.raises(BackendError, match="HTTP 400: This model's maximum context length is 2048 tokens"):
            backend.letter_logprobs(prompts[:1], [["A", "B", "C"]])
    assert server.calls == 1


def test_persistent_failure_gives_up_after_retries(tiny_model_dir, prompts):
    with _ScriptedServer([(502, {"error": {"message": "bad gateway"}})]) as server:
        backend = OpenAIBackend("tiny", base_url=server.url, tokenizer=str(tiny_model_dir), backoff_s=0.01, max_retries=2)
        with pytest.raises(BackendError, match="3 attempts, last error HTTP 502: bad gateway"):
            backend.generate(prompts[:1], n=1, temperature=1.0, top_p=0.9, max_tokens=8, stop=[], seed=0)
    assert server.calls == 3


def test_unloadable_tokenizer_is_a_config_error():
    from usermirrorer.errors import ConfigError

    with pytest.raises(ConfigError, match="Pass tokenizer="):
        OpenAIBackend("gpt-4o-mini", base_url="http://127.0.0.1:9/v1", tokenizer="/no/such/folder")


@pytest.mark.skipif(HAS_VLLM, reason="checks the error raised where vllm is NOT installed")
def test_vllm_backend_without_vllm_names_the_extra():
    from usermirrorer.sim.backends import make_backend

    with pytest.raises(MissingDependency, match=r"usermirrorer\[vllm\]"):
        make_backend("vllm", "tiny-random")



def test_likelihood_mode_against_a_server_without_prompt_logprobs_names_the_mode(tiny_model_dir, scene_factory):
    """A server that answers ``echo`` without prompt log-probabilities (OpenAI's hosted models)."""
    from usermirrorer.sim import SimOptions, UserSimulator

    scene = scene_factory(0, k=3)
    reply = {"id": "cmpl-echo", "object": "text_completion", "created": 0, "model": "tiny",
             "choices": [{"index": i, "text": "", "finish_reason": "length", "logprobs": None} for i in range(3)]}
    with _ScriptedServer([(200, reply)]) as server:
        backend = OpenAIBackend("tiny", base_url=server.url, tokenizer=str(tiny_model_dir), max_retries=0)
        sim = UserSimulator("tiny", backend=backend, options=SimOptions(mode="likelihood"))
        with pytest.raises(BackendError, match="Mode 'likelihood' needs them: serve the model with vLLM"):
            sim.choice_probs([scene])
    assert server.calls == 1  # not retried: the reply is well formed, it only lacks what the mode needs
