"""Where an index finds its model: from any working folder, after the index and its model moved together,
and from manifests saved before the model was recorded relative to the index folder."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from _index_fakes import HashEncoder
from textcl.errors import ModelNotFoundError
from textcl.index import SearchIndex, index_model

TEXTS = ["the cat sat on the mat", "a dog chased the ball", "stock markets fell"]


@pytest.fixture()
def demo(tmp_path, monkeypatch):
    """As the demo builds it: the model loaded by a path relative to the working folder (encoder.name is that
    path), the index saved beside it."""
    (tmp_path / "runs" / "quickstart" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    index = SearchIndex.build(TEXTS, encoder=HashEncoder(name="runs/quickstart/model"))
    index.save("runs/quickstart/wiki-index")
    return tmp_path / "runs" / "quickstart"


def test_an_index_finds_its_model_from_another_working_folder(demo, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = index_model(demo / "wiki-index")
    assert model == str(demo / "model") and os.path.isdir(model)
    assert SearchIndex.load(demo / "wiki-index").model_name == model
    manifest = json.loads((demo / "wiki-index" / "manifest.json").read_text())
    assert manifest["model"] == str(demo / "model") and manifest["model_relative"] == "../model"


def test_an_index_moved_with_its_model_finds_the_moved_model(demo, tmp_path, monkeypatch):
    moved = shutil.move(demo, tmp_path / "moved")
    monkeypatch.chdir(moved)
    model = index_model("wiki-index")
    assert model == str(tmp_path / "moved" / "model")
    index = SearchIndex.load("wiki-index", encoder=HashEncoder())
    assert index.model_name == model
    index.save("wiki-index")  # a re-save records the model where it is now
    manifest = json.loads((tmp_path / "moved" / "wiki-index" / "manifest.json").read_text())
    assert manifest["model"] == model and manifest["model_relative"] == "../model"


def test_a_missing_model_folder_names_every_path_tried_and_the_option(demo, tmp_path, monkeypatch):
    shutil.move(demo / "wiki-index", tmp_path / "wiki-index")  # the index alone: its model stays behind ...
    shutil.rmtree(demo / "model")  # ... and is then deleted
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as err:
        index_model("wiki-index")
    message = str(err.value)
    assert "wiki-index/manifest.json: the index's model folder is missing" in message
    assert f"{tmp_path / 'model'} (relative to the index folder: ../model)" in message
    assert f"{demo / 'model'} (where it was when the index was saved)" in message
    assert "--model" in message
    assert SearchIndex.load("wiki-index").model_name == str(demo / "model")  # loading needs no model


def test_old_manifests_and_hub_names(tmp_path, monkeypatch):
    (tmp_path / "runs" / "quickstart" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    SearchIndex.build(TEXTS, encoder=HashEncoder(name="org/hub-model")).save("hub-ix")
    assert index_model("hub-ix") == "org/hub-model"  # a hub name stays a hub name
    assert "model_relative" not in json.loads((tmp_path / "hub-ix" / "manifest.json").read_text())

    SearchIndex.build(TEXTS, encoder=HashEncoder(name="runs/quickstart/model")).save("old-ix")
    mpath = tmp_path / "old-ix" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    # saved before models were recorded relative to the index folder: the path the build was given
    manifest["model"] = "runs/quickstart/model"
    del manifest["model_relative"]
    mpath.write_text(json.dumps(manifest))
    assert index_model("old-ix") == "runs/quickstart/model"  # the stored string as is, from the build's folder
    monkeypatch.chdir(tmp_path / "runs")
    with pytest.raises(ModelNotFoundError, match=r"old-ix/manifest.json: the index's model folder is missing; "
                                                 r"tried runs/quickstart/model \(as recorded, from the current "
                                                 rf"folder {tmp_path / 'runs'}\)\. Pass the model .* as --model"):
        index_model("../old-ix")

    manifest["model"] = None
    mpath.write_text(json.dumps(manifest))
    from textcl.errors import ConfigError

    with pytest.raises(ConfigError, match="records no model; pass --model"):
        index_model("../old-ix")


def test_cli_search_from_elsewhere_after_a_move(tmp_path, monkeypatch):
    import textcl.commands.index as cmd
    from textcl.cli import main

    loaded = []
    monkeypatch.setattr(cmd, "load_encoder", lambda name, backend=None: loaded.append(name) or HashEncoder())
    (tmp_path / "proj" / "model").mkdir(parents=True)
    (tmp_path / "proj" / "docs.txt").write_text("\n".join(TEXTS) + "\n")
    monkeypatch.chdir(tmp_path / "proj")
    assert main(["index", "build", "--model", "model", "--input", "docs.txt", "--out", "ix"]) == 0
    shutil.move(tmp_path / "proj", tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    assert main(["index", "search", "moved/ix", "cat"]) == 0 and loaded[-1] == str(tmp_path / "moved" / "model")


def test_a_streaming_build_resumes_only_with_the_same_model_folder(tmp_path, monkeypatch):
    """The resume key names a local model by its absolute path: the same relative name from another working
    folder is another model, and its build starts afresh."""
    from _index_fakes import FailingEncoder
    from textcl.data.records import Document
    from textcl.index import build_streaming

    docs = [Document(f"d{i}", f"text number {i}") for i in range(300)]
    for project in ("a", "b"):
        (tmp_path / project / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    killed = FailingEncoder(ok_calls=2)
    killed.name = "model"
    with pytest.raises(KeyboardInterrupt):
        build_streaming(iter(docs), killed, tmp_path / "ix", chunk_size=64, show_progress=False)
    monkeypatch.chdir(tmp_path / "b")
    encoder = HashEncoder(name="model")
    index = build_streaming(iter(docs), encoder, tmp_path / "ix", chunk_size=64, show_progress=False)
    assert encoder.calls == 5  # every chunk embedded again, by b's model
    assert index.model_name == str(tmp_path / "b" / "model")


def test_serve_loads_the_model_that_moved_with_its_index(tiny_bert_dir, tmp_path, monkeypatch):
    """`textcl serve` asks the same question as `index search`: an index moved together with its model folder
    is served with the moved model (the service once read the manifest's stored path alone)."""
    from test_serve_support import build_index

    from textcl.serve import ServeConfig
    from textcl.serve.service import IndexService

    run = tmp_path / "runs" / "quickstart"
    shutil.copytree(tiny_bert_dir, run / "model")
    build_index(run / "wiki-index", run / "model")
    moved = shutil.move(run, tmp_path / "moved")
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    service = IndexService(ServeConfig(os.path.join(moved, "wiki-index"))).start()
    try:
        assert service.encoder.name == os.path.join(moved, "model")
    finally:
        service.close()


def test_an_index_copied_beside_another_model_keeps_its_own_while_it_exists(demo, tmp_path, monkeypatch):
    """The index alone copied to /elsewhere/wiki-index, beside an unrelated /elsewhere/model: the recorded
    folder still exists, so it wins over the relative path (which would silently search with the other model)."""
    other = tmp_path / "elsewhere"
    (other / "model").mkdir(parents=True)
    shutil.copytree(demo / "wiki-index", other / "wiki-index")
    assert index_model(other / "wiki-index") == str(demo / "model")
    shutil.rmtree(demo / "model")  # once the recorded folder is gone, the relative one is the index's
    assert index_model(other / "wiki-index") == str(other / "model")


def _model_folder(path, seed: int):
    """A model folder with a config and weights of its own (what the fingerprint reads)."""
    import numpy as np

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"hidden_size": 8}')
    (path / "model.safetensors").write_bytes(np.random.default_rng(seed).bytes(300_000))
    return path


def test_an_archived_index_is_not_served_with_the_new_model_at_its_old_place(tmp_path, monkeypatch):
    """runs/quickstart moved to runs/quickstart-v1 and the recipe rerun into runs/quickstart: the archived index
    must find its own model (moved with it), not the new one now at its recorded place. The manifest records the
    model's fingerprint; a folder with other weights is not the index's model."""
    monkeypatch.chdir(tmp_path)
    _model_folder(tmp_path / "runs" / "quickstart" / "model", seed=1)
    index = SearchIndex.build(TEXTS, encoder=HashEncoder(name="runs/quickstart/model"))
    index.save("runs/quickstart/wiki-index")
    shutil.move(tmp_path / "runs" / "quickstart", tmp_path / "runs" / "quickstart-v1")
    _model_folder(tmp_path / "runs" / "quickstart" / "model", seed=2)  # the rerun's model, same shape
    v1 = tmp_path / "runs" / "quickstart-v1"
    assert index_model("runs/quickstart-v1/wiki-index") == str(v1 / "model")
    shutil.copytree(v1, tmp_path / "copy")  # without its model: the one at the recorded place is not it
    shutil.rmtree(tmp_path / "copy" / "model")
    with pytest.raises(ModelNotFoundError, match=r"runs/quickstart/model \(where it was when the index was saved; "
                                                 r"another model there: its weights differ from the index's\)"):
        index_model("copy/wiki-index")
    loaded = SearchIndex.load("runs/quickstart-v1/wiki-index", encoder=HashEncoder())
    assert loaded.model_name == str(v1 / "model")
    loaded.save("runs/quickstart-v1/wiki-index")  # a re-save records the model where it is, same fingerprint
    assert index_model("runs/quickstart-v1/wiki-index") == str(v1 / "model")
