"""The CPU scoring service: OpenAI-compatible replies, batching, errors, and the serve command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from sim_fixtures import make_scene


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from usermirrorer.sim.serving import start_server

    with start_server(str(tiny_model_dir), served_model_name="tiny", backend_kwargs={"dtype": "float32"},
                      batch_window_s=0.05) as running:
        yield running


def test_concurrent_clients_are_batched_and_match_the_in_process_backend(server, tiny_model_dir, tiny_backend):
    from usermirrorer.sim.backends.openai_backend import OpenAIBackend
    from usermirrorer.sim.prompts import build_prompt

    scenes = [make_scene(i) for i in range(6)]
    prompts = [build_prompt(s, "direct") for s in scenes]
    letters = [list(p.letters) for p in prompts]
    client = OpenAIBackend("tiny", base_url=server.url, tokenizer=str(tiny_model_dir), vllm_extensions=True,
                           max_concurrency=6)
    before = server.service.stats.batches
    got = client.letter_logprobs(prompts, letters)
    expected = tiny_backend.letter_logprobs(prompts, letters)
    # fp32 forwards over differently composed batches: float rounding only (see test_workers.py)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(np.exp(g), np.exp(e), atol=1e-6, rtol=0)
    # 6 concurrent requests within a 50 ms window share forward passes
    assert server.service.stats.batches - before < len(prompts)
    assert server.service.stats.largest_batch >= 2


def test_replies_follow_the_openai_and_vllm_shapes(server, tiny_model_dir):
    tokenizer = server.service.tokenizer
    wanted = tokenizer("A", add_special_tokens=False)["input_ids"]
    status, reply = _post(server.url, {"model": "tiny", "prompt": "Behavior: [", "max_tokens": 1, "logprobs": 3,
                                       "logprob_token_ids": wanted, "return_tokens_as_token_ids": True})
    assert status == 200 and reply["object"] == "text_completion"
    top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
    assert f"token_id:{wanted[0]}" in top and len(top) in (3, 4)
    assert all(v <= 0 for v in top.values())
    # a logit bias on one token moves it to the top, as OpenAI applies it
    status, biased = _post(server.url, {"model": "tiny", "prompt": "Behavior: [", "max_tokens": 1, "logprobs": 1,
                                        "logit_bias": {str(wanted[0]): 100}})
    assert status == 200 and biased["choices"][0]["text"] == "A"
    status, gen = _post(server.url, {"model": "tiny", "prompt": "Thought:", "max_tokens": 4, "n": 2, "seed": 3,
                                     "temperature": 1.0})
    assert status == 200 and len(gen["choices"]) == 2
    _, again = _post(server.url, {"model": "tiny", "prompt": "Thought:", "max_tokens": 4, "n": 2, "seed": 3,
                                  "temperature": 1.0})
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in gen["choices"]]  # seeded


def test_bad_requests_say_what_is_wrong(server):
    status, reply = _post(server.url, {"model": "other", "prompt": "x", "max_tokens": 1})
    assert status == 404 and "serves 'tiny'" in reply["error"]["message"]
    status, reply = _post(server.url, {"model": "tiny", "prompt": ["a", "b"], "max_tokens": 1})
    assert status == 400 and "one prompt per request" in reply["error"]["message"]
    status, reply = _post(server.url, {"model": "tiny", "prompt": "x", "max_tokens": 1, "logit_bias": {"-5": 1}})
    assert status == 400 and "outside the vocabulary" in reply["error"]["message"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_answers_until_interrupted(tiny_model_dir):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "usermirrorer.cli", "serve", "--model", str(tiny_model_dir),
                             "--port", str(port), "--dtype", "float32", "--served-model-name", "tiny"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline, models = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as reply:
                    models = json.loads(reply.read())
                break
            except OSError:
                time.sleep(0.2)
        assert models is not None, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no reply"
        assert models["data"][0]["id"] == "tiny"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_echo_returns_prompt_logprobs_as_likelihood_mode_reads_them(server, tiny_backend):
    from usermirrorer.sim.prompts import build_prompt

    scene = make_scene(2)
    prompt = build_prompt(scene, "likelihood")
    options = scene["text"]["action_list"]
    rows, starts = tiny_backend.encoder.encode_continuations(prompt, options)
    status, reply = _post(server.url, {"model": "tiny", "prompt": rows, "max_tokens": 0, "echo": True, "logprobs": 1})
    assert status == 200 and len(reply["choices"]) == len(rows)
    got = []
    for row, start, choice in zip(rows, starts, sorted(reply["choices"], key=lambda c: c["index"])):
        values = choice["logprobs"]["token_logprobs"]
        assert len(values) == len(row) and values[0] is None
        got.append(sum(values[start:]))
    expected = tiny_backend.continuation_logprobs([prompt], [options])[0].logprob
    # sums of ~10-30 fp32 token log-probabilities of a few nats each; the in-process backend
    # computes the shared prompt once, the service each sequence whole: rounding only
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    status, reply = _post(server.url, {"model": "tiny", "prompt": rows, "max_tokens": 1, "echo": True})
    assert status == 400 and "max_tokens=0" in reply["error"]["message"]


def test_likelihood_mode_through_the_openai_backend_equals_the_in_process_backend(server, tiny_model_dir, tiny_backend):
    """The whole client path of likelihood mode (``OpenAIBackend.continuation_logprobs``: one echo
    request per scene, token ids in, prompt log-probabilities out) against the service."""
    from usermirrorer.sim import SimOptions, UserSimulator
    from usermirrorer.sim.backends.openai_backend import OpenAIBackend

    scenes = [make_scene(i, k=k) for i, k in enumerate([3, 5])]
    client = OpenAIBackend("tiny", base_url=server.url, tokenizer=str(tiny_model_dir), max_retries=0)
    before = server.service.stats.echo_requests
    remote = UserSimulator("tiny", backend=client, options=SimOptions(mode="likelihood")).choice_probs(scenes)
    local = UserSimulator(tiny_backend.model_name, backend=tiny_backend,
                          options=SimOptions(mode="likelihood")).choice_probs(scenes)
    for r, loc in zip(remote, local):
        # PMI = two sums of fp32 token log-probs; the service scores each sequence whole
        np.testing.assert_allclose(r.scores, loc.scores, atol=1e-4, rtol=0)
        np.testing.assert_allclose(r.probs, loc.probs, atol=1e-5, rtol=0)
    # one request per scene context, plus the neutral context's once for all option texts
    assert server.service.stats.echo_requests - before == client.stats.requests == len(scenes) + 1
