"""The OpenAI-compatible backend against a misbehaving server (issue #18: items 1, 13, 17, 18)."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from backend_fixtures import movie_scene

from usermirrorer.errors import BackendError, ConfigError, DataError
from usermirrorer.sim.backends.openai_backend import OpenAIBackend, read_batch_jsonl
from usermirrorer.sim.prompts import build_prompt


class _Server:
    """Answers each POST with the next scripted ``(status, body bytes, seconds between bytes)``."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                owner.requests.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                status, body, pause = owner.script[min(len(owner.requests) - 1, len(owner.script) - 1)]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if pause:
                        for byte in body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(pause)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(top: dict[str, float]) -> bytes:
    body = {"id": "c", "object": "text_completion", "created": 0, "model": "tiny",
            "choices": [{"index": 0, "text": "A", "finish_reason": "length",
                         "logprobs": {"tokens": ["A"], "token_logprobs": [-1.0], "top_logprobs": [top]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}
    return json.dumps(body).encode()  # json.dumps writes NaN / Infinity as the servers that send them do


@pytest.fixture
def prompt():
    return build_prompt(movie_scene(0, 5), "direct")


def _backend(tiny_model_dir, url, **kw):
    kw = {"backoff_s": 0.01, "max_retries": 2, **kw}
    return OpenAIBackend("tiny", base_url=url, tokenizer=str(tiny_model_dir), **kw)


@pytest.mark.parametrize("top", [{"X": -0.1}, {"A": float("nan")}, {"A": float("inf"), "B": -2.0},
                                 {"A": -1.0, "B": -1.1}])
def test_an_unmeasured_letter_distribution_is_never_returned(tiny_model_dir, prompt, top):
    with _Server([(200, _reply(top), 0)]) as server:
        backend = _backend(tiny_model_dir, server.url)
        with pytest.raises(BackendError, match="not measured"):
            backend.letter_logprobs([prompt], [list(prompt.letters)])
    assert len(server.requests) == 2  # asked again, with the letters boosted
    letter_ids = backend.encoder.letter_ids_for(prompt, prompt.letters)
    assert server.requests[1]["logit_bias"] == {str(t): 100 for t in letter_ids}


def test_a_partial_list_is_asked_again_with_the_letters_boosted(tiny_model_dir, prompt):
    full = {"A": math.log(0.5), "B": math.log(0.2), "C": math.log(0.1), "D": math.log(0.1), "E": math.log(0.1)}
    with _Server([(200, _reply({"A": -1.0, "B": -1.1}), 0), (200, _reply(full), 0)]) as server:
        [lp] = _backend(tiny_model_dir, server.url).letter_logprobs([prompt], [list(prompt.letters)])
    np.testing.assert_allclose(np.exp(lp), [0.5, 0.2, 0.1, 0.1, 0.1], atol=1e-12)
    assert len(server.requests) == 2


@pytest.mark.parametrize("top", [{"A": -0.01}, {"A": math.log(0.9), "B": math.log(0.099)}])
def test_a_listed_letter_with_a_small_unlisted_rest_is_measured(tiny_model_dir, prompt, top):
    # the list leaves at most 1% of the mass to the unlisted letters: bounded, not uniform
    with _Server([(200, _reply(top), 0)]) as server:
        [lp] = _backend(tiny_model_dir, server.url).letter_logprobs([prompt], [list(prompt.letters)])
    p, listed = np.exp(lp), np.exp(list(top.values()))
    assert p[: len(listed)] == pytest.approx(listed / listed.sum(), abs=0.011)
    assert p[len(listed):].sum() <= 1 - listed.sum() + 1e-9
    assert len(server.requests) == 1


def test_batch_output_without_the_letters_names_file_and_line(tiny_model_dir, prompt, tmp_path):
    backend = _backend(tiny_model_dir, "http://127.0.0.1:9/v1")
    req = backend.to_batch_jsonl([prompt], tmp_path / "req.jsonl", letters=[list(prompt.letters)])
    [(_, request)] = read_batch_jsonl(req)
    body = json.loads(_reply({"X": -0.1}))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"custom_id": request["custom_id"], "response": {"status_code": 200, "body": body}}) + "\n")
    with pytest.raises(DataError, match=r"out.jsonl:1: .*none of the option letters"):
        backend.from_batch_jsonl(out)


def test_the_timeout_bounds_the_whole_request(tiny_model_dir, prompt):
    slow = _reply({"A": -0.5, "B": -1.0, "C": -2.0, "D": -3.0, "E": -4.0})
    with _Server([(200, slow, 15.0 / len(slow))]) as server:  # the reply trickles in over 15 s
        backend = _backend(tiny_model_dir, server.url, timeout_s=1.0, max_retries=0)
        began = time.monotonic()
        with pytest.raises(BackendError, match="no complete reply within timeout_s=1"):
            backend.letter_logprobs([prompt], [list(prompt.letters)])
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("body", [b"<html><body>502 Bad Gateway</body></html>", b'{"not": "a completion"}', b"[1, 2",
                                  b'{"choices": [1, 2]}'])
def test_malformed_200_replies_are_retried_then_named(tiny_model_dir, prompt, body):
    good = _reply({"A": -0.5, "B": -1.0, "C": -2.0, "D": -3.0, "E": -4.0})
    with _Server([(200, body, 0), (200, good, 0)]) as server:
        backend = _backend(tiny_model_dir, server.url)
        [lp] = backend.letter_logprobs([prompt], [list(prompt.letters)])
        assert backend.stats.retries == 1 and np.exp(lp).sum() == pytest.approx(1.0)
    with _Server([(200, body, 0)]) as server, pytest.raises(BackendError, match="3 attempts, last error HTTP 200 with"):
        _backend(tiny_model_dir, server.url).generate([prompt], n=1, temperature=1.0, top_p=0.9, max_tokens=4,
                                                      stop=[], seed=0)


@pytest.mark.parametrize("kwargs, fragment", [({"timeout_s": 0}, "timeout_s must be"),
                                              ({"timeout_s": float("nan")}, "timeout_s must be"),
                                              ({"base_url": "ftp://127.0.0.1/v1"}, "http:// or https://")])
def test_config_mistakes_are_config_errors_not_network_trouble(tiny_model_dir, kwargs, fragment):
    kwargs = {"base_url": "http://127.0.0.1:9/v1", **kwargs}
    with pytest.raises(ConfigError, match=fragment):
        OpenAIBackend("tiny", tokenizer=str(tiny_model_dir), **kwargs)
