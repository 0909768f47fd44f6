"""Which model may search an index: ``textcl serve INDEX --index-model`` and ``textcl index search/add --model``
check a substitute against the manifest's fingerprint (a hub name too, once resolved) or, for an index built
through a server, against the probe vectors recorded at the build; a ``--dim`` index truncates any wider model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_serve_embeddings_support import wide_model_dir  # noqa: F401
from test_serve_support import DOCS, build_index, local_client, serve_encoder, serve_model_dir  # noqa: F401
from textcl.errors import ConfigError
from textcl.index import SearchIndex
from textcl.serve import create_app


def serve_config(*argv):
    from textcl.cli import build_parser
    from textcl.commands.serve import config_from_args

    return config_from_args(build_parser().parse_args(["serve", *argv, "--threads", "1"]))


def cli(*argv) -> int:
    """Run a command as ``textcl`` does, its errors raised (``main`` prints them)."""
    from textcl.cli import build_parser

    args = build_parser().parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory, serve_model_dir):
    """The tiny BERT's architecture and width (32) with other weights: a fine-tune of the same base."""
    import torch

    from textcl.models import Encoder

    encoder = Encoder.load(str(serve_model_dir))
    torch.manual_seed(7)
    with torch.no_grad():
        for p in encoder.model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return encoder.save(tmp_path_factory.mktemp("other") / "model")


@pytest.fixture()
def moved(tmp_path, serve_model_dir, serve_encoder):
    """(index folder, its model folder's new place): built with a copy of the model that then moved."""
    model = shutil.copytree(serve_model_dir, tmp_path / "model")
    index = build_index(tmp_path / "ix", model, encoder=serve_encoder)
    return index, shutil.move(str(model), str(tmp_path / "elsewhere"))


def top_id(app, text: str) -> str:
    with local_client(app) as client:
        return client.get("/search", params={"q": text, "k": 1}).json()["results"][0]["hits"][0]["id"]


# ---------------------------------------------------------------- 1: a hub name is resolved and fingerprinted
def test_a_hub_name_is_checked_against_the_recorded_fingerprint(moved, minilm_path):
    index, _ = moved
    with pytest.raises(ConfigError) as err:
        create_app(serve_config(str(index), "--index-model", "sentence-transformers/all-MiniLM-L6-v2"))
    assert str(err.value) == (f"--index-model: sentence-transformers/all-MiniLM-L6-v2 is not the model {index} was "
                              "built with (its weights differ from the model_fingerprint in its manifest.json); "
                              "expected that model's folder")


def test_a_name_that_cannot_be_fingerprinted_is_refused(moved):
    index, _ = moved
    with pytest.raises(ConfigError) as err:
        create_app(serve_config(str(index), "--index-model", "nobody/no-such-model"))
    assert str(err.value).startswith(
        f"--index-model: nobody/no-such-model cannot be compared with the model_fingerprint that {index}/manifest.json "
        "records (cannot find model 'nobody/no-such-model'")
    assert str(err.value).endswith("expected the folder of the model the index was built with")


# ---------------------------------------------------------------- 2: a --dim index without a fingerprint
def dim_index(path: Path, model_dir: Path, dim: int = 16, fingerprint: bool = False) -> Path:
    """An index of DOCS holding the model's first ``dim`` dimensions (``index build --dim``)."""
    from textcl.models import Encoder

    encoder = Encoder.load(str(model_dir))
    encoder.truncate_dim = dim
    index = SearchIndex.build([d[2] for d in DOCS], ids=[d[0] for d in DOCS], encoder=encoder,
                              model_name=str(model_dir))
    index.save(path)
    index.close()
    if not fingerprint:  # as a server-built or older index: nothing recorded to compare
        manifest = json.loads((path / "manifest.json").read_text())
        manifest.pop("model_fingerprint")
        (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_index_model_truncates_to_a_dim_index_without_a_fingerprint(tmp_path, serve_model_dir):
    index = dim_index(tmp_path / "ix", serve_model_dir)
    app = create_app(serve_config(str(index), "--index-model", str(serve_model_dir)))
    assert top_id(app, DOCS[2][2]) == DOCS[2][0]


# ---------------------------------------------------------------- 3: a server-built index records a probe
class FakeRemote:
    """A RemoteEncoder's face over a local encoder: its vectors are the server's."""

    def __init__(self, encoder):
        self.inner, self.server, self.name = encoder, {"server": "http://gpu-box:8000/v1", "model": "tiny"}, "tiny"
        self.dim, self.truncate_dim = encoder.dim, None

    def encode(self, texts, **kwargs):
        return self.inner.encode(texts, dim=self.truncate_dim, normalize=True)


@pytest.fixture()
def served_index(tmp_path, serve_encoder):
    index = SearchIndex.build([d[2] for d in DOCS], ids=[d[0] for d in DOCS], encoder=FakeRemote(serve_encoder))
    index.save(tmp_path / "ix")
    index.close()
    return tmp_path / "ix"


def test_a_server_built_index_records_a_probe_of_three_texts(served_index, serve_encoder):
    from textcl.index.identity import probe_vectors

    manifest = SearchIndex.read_manifest(served_index)
    texts, vectors = probe_vectors(manifest, served_index)
    assert len(texts) == 3 and len(texts[0]) < len(texts[1]) < len(texts[2]) and vectors.shape == (3, 32)
    assert len(serve_encoder.tokenizer(texts[2])["input_ids"]) > 512  # over any BERT's limit
    expected = serve_encoder.encode(texts, normalize=True)
    assert np.allclose(vectors, expected, atol=1e-5)


def test_a_substitute_for_a_server_built_index_is_checked_against_its_probe(served_index, serve_model_dir,
                                                                            other_model_dir):
    with pytest.raises(ConfigError) as err:
        create_app(serve_config(str(served_index), "--index-model", str(other_model_dir)))
    assert str(err.value).startswith(f"--index-model: {other_model_dir} does not embed the probe texts that "
                                     f"{served_index}/manifest.json records as the server http://gpu-box:8000/v1 "
                                     "did (cosine ")
    assert str(err.value).endswith("expected 0.999 or more for each); expected the model that server serves")
    app = create_app(serve_config(str(served_index), "--index-model", str(serve_model_dir)))
    assert top_id(app, DOCS[2][2]) == DOCS[2][0]


# ---------------------------------------------------------------- 4: index search/add --model
def test_index_search_with_another_models_folder_is_refused(moved, wide_model_dir):
    index, _ = moved
    with pytest.raises(ConfigError) as err:
        cli("index", "search", str(index), "a query", "--model", str(wide_model_dir))
    assert str(err.value) == (f"--model: {wide_model_dir} is not the model {index} was built with (its weights "
                              "differ from the model_fingerprint in its manifest.json); expected that model's folder")


def test_index_add_with_another_model_is_refused_by_its_probe(served_index, other_model_dir, tmp_path):
    docs = tmp_path / "more.jsonl"
    docs.write_text(json.dumps({"id": "x", "text": "another document"}) + "\n")
    with pytest.raises(ConfigError, match=r"^--model: .* does not embed the probe texts"):
        cli("index", "add", str(served_index), "--input", str(docs), "--model", str(other_model_dir))


def test_index_search_with_model_truncates_to_a_dim_index(tmp_path, serve_model_dir, capsys):
    index = dim_index(tmp_path / "ix", serve_model_dir, fingerprint=True)
    assert cli("index", "search", str(index), DOCS[2][2], "-k", "1", "--json", "--model", str(serve_model_dir)) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == DOCS[2][0]



# ---------------------------------------------------------------- 8: a manifest's server needs --server to confirm
def test_index_search_refuses_the_manifests_server_unless_confirmed(served_index):
    with pytest.raises(ConfigError) as err:
        cli("index", "search", str(served_index), "a query")
    assert str(err.value) == (f"--server: {served_index} was built through the server http://gpu-box:8000/v1, which "
                              "its manifest.json records: its queries (and $TEXTCL_API_KEY) would go there; pass "
                              "--server http://gpu-box:8000/v1 to confirm")


def test_index_add_refuses_a_server_of_another_origin(served_index, tmp_path):
    docs = tmp_path / "more.jsonl"
    docs.write_text(json.dumps({"id": "x", "text": "another document"}) + "\n")
    with pytest.raises(ConfigError) as err:
        cli("index", "add", str(served_index), "--input", str(docs), "--server", "http://gpu-box:9000")
    assert str(err.value) == (f"--server: http://gpu-box:9000 is not the server http://gpu-box:8000/v1 that "
                              f"{served_index}/manifest.json records (another origin); expected --server "
                              "http://gpu-box:8000/v1")


def test_index_search_through_the_confirmed_server(served_index, serve_encoder, monkeypatch, capsys):
    made = []

    def remote(url, model=None, **kwargs):
        made.append((url, model))
        return FakeRemote(serve_encoder)

    monkeypatch.setattr("textcl.encode.remote.RemoteEncoder", remote)
    assert cli("index", "search", str(served_index), DOCS[2][2], "-k", "1", "--json",
               "--server", "http://gpu-box:8000") == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == DOCS[2][0]
    assert made == [("http://gpu-box:8000/v1", "tiny")]


# ---------------------------------------------------------------- 14: /info names the model used; server checked
def test_info_names_the_index_model_actually_used(moved):
    index, elsewhere = moved
    app = create_app(serve_config(str(index), "--index-model", elsewhere))
    with local_client(app) as client:
        assert client.get("/info").json()["model"] == "elsewhere"


@pytest.mark.parametrize("server", [{"server": 5}, {"model": "m"}, "http://gpu-box:8000", {"server": "u", "model": 3}])
def test_a_malformed_server_is_refused_on_construction(server):
    with pytest.raises(ConfigError) as err:
        SearchIndex(4, server=server)
    assert str(err.value) == f'server: expected {{"server": URL, "model": name or None}}, got {server!r}'
