"""Bad prompt override files give one-line errors naming the file (issue #18, item 19)."""

from __future__ import annotations

import pytest

from usermirrorer.cli import main
from usermirrorer.data_pipeline.jsonl import write_jsonl
from usermirrorer.errors import ConfigError
from usermirrorer.sim.prompts import load_prompts


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("direct_system: [unclosed\n", r"p\.yaml:\d+: not valid YAML"),
        ("a: b\n  c: d\n", r"p\.yaml:\d+: not valid YAML"),
        ("\tdirect_system: hi\n", r"p\.yaml:\d+: not valid YAML"),
        ("!!python/object:os.system {}\n", "not valid YAML"),  # safe_load still refuses the tag
        ("? [a, b]\n: c\n", "not valid YAML"),
        ("1: c\n", "unknown prompt field"),
        ("direct_system: 3\n", "must be strings"),
    ],
)
def test_bad_yaml_is_a_config_error(tmp_path, text, fragment):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as err:
        load_prompts(path)
    assert "\n" not in str(err.value)


def test_bad_encoding_and_the_cli(tmp_path, capsys, scene_factory):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"direct_system: \xff\xfe\n")
    with pytest.raises(ConfigError, match="could not be parsed"):
        load_prompts(path)
    path.write_text("direct_system: [unclosed\n")
    scenes = tmp_path / "scenes.jsonl"
    write_jsonl(scenes, [scene_factory(0)])
    rc = main(["eval", "--model", "tiny-random", "--input", str(scenes), "--output", str(tmp_path / "o.jsonl"),
               "--prompts", str(path)])
    err = capsys.readouterr().err
    assert rc == 1 and "p.yaml:2: not valid YAML" in err and len(err.strip().splitlines()) == 1
