"""The same outputs as before the architecture move (issue #12): scene files byte for byte,
and the demo's transcript for a fixed seed with the popularity choice model.

The expected values were recorded from the code before the move; see
``tests/fixtures/golden/README.md`` for the exact commands.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from usermirrorer.cli import main

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden"


def _expected_hashes() -> dict[str, str]:
    pairs = (line.split() for line in (GOLDEN / "scenes.sha256").read_text().splitlines() if line)
    return {name: digest for digest, name in pairs}


@pytest.mark.slow
def test_scenes_command_output_is_byte_identical(tmp_path: Path):
    project = tmp_path / "w"
    assert main(["preprocess", "ml-100k", "--project-path", str(project)]) == 0
    base = ["scenes", "--dataset", "ml-100k", "--project-path", str(project)]
    assert main(base + ["--eval-set", "--samples", "256", "--seed", "7"]) == 0
    assert main(base + ["--eval-set", "--samples", "256", "--seed", "7",
                        "--negatives", "popularity-matched"]) == 0
    hash_train = project / "hash_train.jsonl"
    assert main(base + ["--samples", "300", "--seed", "3", "--embedder", "hashing",
                        "--output", str(hash_train)]) == 0
    files = {"ml-100k_eval.jsonl": project / "datasets" / "ml-100k_eval.jsonl",
             "ml-100k_eval_popmatched.jsonl": project / "datasets" / "ml-100k_eval_popmatched.jsonl",
             "hash_train.jsonl": hash_train}
    got = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    assert got == _expected_hashes()


# Lines of the transcript that carry wall-clock times (filtered out of the recording too).
_TIMING = re.compile(r" s\b| s;|simulator ready")


def test_demo_transcript_is_unchanged(ml100k_project: Path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    rc = main(["demo", "--model", "popularity", "--no-live", "--seed", "0", "--project",
               str(ml100k_project), "--agents", "random,popularity,collaborative,linucb"])
    assert rc == 0
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines() if not _TIMING.search(line)]
    expected = (GOLDEN / "demo_popularity_seed0.txt").read_text().splitlines()
    assert lines == expected
