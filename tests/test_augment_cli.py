"""``textcl augment preview``: the views of a pipeline next to the originals, and its input errors."""
from __future__ import annotations

import argparse

import pytest

from textcl.commands import augment as augment_command
from textcl.errors import ConfigError, DataFormatError


def run(argv):
    parser = argparse.ArgumentParser(prog="textcl")
    augment_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(
        "The quick brown fox jumps over the lazy dog near the river bank.\n"
        "\n"
        "A man is playing a large guitar on the street tonight.\n"
        "我喜欢吃苹果和香蕉\n"
        "Wikipedia is a free online encyclopedia written by volunteers.\n",
        encoding="utf-8",
    )
    return path


def preview_blocks(out: str) -> list[list[str]]:
    blocks = out.strip().split("\n\n")
    assert blocks[0].startswith("augmenter: ")
    return [block.splitlines() for block in blocks[1:]]


def test_preview_prints_each_original_with_two_views_of_the_default_pipeline(corpus, capsys):
    assert run(["augment", "preview", "--input", str(corpus), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "SpanCrop" in out and "WordDeletion" in out
    blocks = preview_blocks(out)
    assert [b[0] for b in blocks] == ["line 1", "line 3", "line 4"]  # blank lines skipped, numbers kept
    for block in blocks:
        original = block[1].removeprefix("  original: ").split()
        assert block[2].startswith("  view 1:   ") and block[3].startswith("  view 2:   ")
        for view in (block[2][len("  view 1:   ") :], block[3][len("  view 2:   ") :]):
            assert view.strip() and set(view.split()) <= set(original) or view in block[1]
    run(["augment", "preview", "--input", str(corpus), "-n", "3"])
    assert capsys.readouterr().out == out  # same seed, same views
    run(["augment", "preview", "--input", str(corpus), "-n", "3", "--seed", "1"])
    assert capsys.readouterr().out != out


def test_preview_with_a_config_or_a_recipe_section(corpus, tmp_path, capsys):
    config = tmp_path / "aug.yaml"
    config.write_text("word_repetition: {rate: 1.0}\n", encoding="utf-8")
    run(["augment", "preview", "--input", str(corpus), "--config", str(config), "-n", "1", "--views", "3"])
    block = preview_blocks(capsys.readouterr().out)[0]
    assert len(block) == 5 and all(len(v.split()) >= 13 for v in block[2:])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: x\naugment:\n  - identity\n", encoding="utf-8")
    run(["augment", "preview", "--input", str(corpus), "--config", str(recipe), "-n", "1"])
    block = preview_blocks(capsys.readouterr().out)[0]
    assert block[2].endswith(block[1].removeprefix("  original: "))


def test_preview_errors_name_the_file_and_field(corpus, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("augment:\n  compose:\n    - span_crop: {max_ratio: 2}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: augment.compose\[0\].span_crop.max_ratio: must be in"):
        run(["augment", "preview", "--input", str(corpus), "--config", str(bad)])
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\nb: 2\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"broken.yaml:\d+: not valid YAML"):
        run(["augment", "preview", "--input", str(corpus), "--config", str(broken)])
    cutoff = tmp_path / "cutoff.yaml"
    cutoff.write_text("token_cutoff: {rate: 0.1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="token_cutoff works on token ids"):
        run(["augment", "preview", "--input", str(corpus), "--config", str(cutoff)])
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"blank.txt: no non-blank line to preview"):
        run(["augment", "preview", "--input", str(blank)])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"fine\nalso fine\ncaf\xe9\n")
    with pytest.raises(DataFormatError, match=r"latin1.txt:3: not valid UTF-8"):
        run(["augment", "preview", "--input", str(latin1)])
    with pytest.raises(ConfigError, match="-n: must be at least 1"):
        run(["augment", "preview", "--input", str(corpus), "-n", "0"])


def test_the_textcl_command_reports_bad_input_with_exit_code_2(corpus, tmp_path, capsys):
    from textcl.cli import main

    assert main(["augment", "preview", "--input", str(corpus), "-n", "1"]) == 0
    assert "line 1" in capsys.readouterr().out
    assert main(["augment", "preview", "--input", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
