"""Every ```python block of README.md runs as written, in an empty directory (#15).

Each block is extracted verbatim and run in a fresh interpreter whose working directory is an
empty folder, so nothing can lean on files of the repository. The user cache is a fresh folder
too (the models already converted are linked in, the datasets are not), so the first block
shows what a new user sees: the bundled MovieLens-100K converted into the cache, with one log
line. The README says that the simulator block reads ``USERMIRRORER_MODEL``; it is set to
``tiny-random`` here. Every other block runs exactly as printed: the first with SmolLM2-135M,
the Stable-Baselines3 and TorchRL examples training 256 steps against the registered env.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from usermirrorer.sim.models import convert_smollm2, resolve_model

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", TEXT, flags=re.DOTALL | re.MULTILINE)
OPENING = (
    "```bash\n"
    "bash install.sh && .venv/bin/usermirrorer demo\n"
    "bash install.sh --dev && .venv/bin/python -m pytest\n"
    "```\n"
)
CONVERTED = "converted the bundled copy into"


def _block_id(index: int) -> str:
    block = BLOCKS[index]
    for marker, name in (
        ("stable_baselines3", "sb3"),
        ("torchrl", "torchrl"),
        ("UserSimulator", "simulator"),
        ("gym.make", "env"),
    ):
        if marker in block:
            return f"{index}-{name}"
    return str(index)


@pytest.fixture(scope="module")
def readme_cache(tmp_path_factory) -> dict:
    """A fresh user cache holding links to the converted models, and whether ML-100K was seen
    being converted into it."""
    root = tmp_path_factory.mktemp("user-cache")
    for folder in (convert_smollm2(), Path(resolve_model("tiny-random"))):
        (root / folder.name).symlink_to(folder, target_is_directory=True)
    return {"root": root, "conversions": 0}


def test_readme_keeps_its_opening_commands_and_documents_the_model_variable():
    assert TEXT.split("\n", 2)[2].startswith(OPENING)
    assert len(BLOCKS) >= 4
    reading = [b for b in BLOCKS if "USERMIRRORER_MODEL" in b]
    assert "USERMIRRORER_MODEL=tiny-random" in TEXT  # the README says so
    assert reading and all("UserSimulator" in b for b in reading)  # only the simulator block
    rl = [b for b in BLOCKS if "stable_baselines3" in b or "torchrl" in b]
    assert len(rl) == 2
    for block in rl:  # the registered id, repeats filled, a few hundred steps
        assert '"usermirrorer/RecEnv-v0"' in block and 'repeats="fill"' in block
        assert "total_timesteps=256" in block or "total_frames=256" in block


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=_block_id)
def test_readme_block_runs_verbatim_in_an_empty_directory(index, tmp_path, readme_cache):
    script = tmp_path / "block.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = {
        **os.environ,
        "USERMIRRORER_CACHE": str(readme_cache["root"]),
        "USERMIRRORER_MODEL": "tiny-random",
        "OMP_NUM_THREADS": "2",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, f"README block {index} failed:\n{done.stderr[-4000:]}"
    # The bundled data went to the user cache, not into the user's directory.
    assert not (workdir / "raws").exists()
    lines = [line for line in done.stderr.splitlines() if CONVERTED in line]
    if readme_cache["conversions"] == 0:
        # The first block to run met an empty cache: one line says where the data went.
        assert len(lines) == 1 and str(readme_cache["root"] / "demo-project" / "raws") in lines[0]
    else:
        assert lines == []
    readme_cache["conversions"] += len(lines)
    if "total_frames=256" in BLOCKS[index]:  # TorchRL: 256 frames in batches of 64 were trained on
        assert done.stdout.count("mean click") == 4
    if "total_timesteps=256" in BLOCKS[index]:  # SB3: the trained agent's slate was shown
        assert " -> " in done.stdout
    assert (readme_cache["root"] / "demo-project" / "raws" / "ml-100k_interaction.jsonl").exists()
