"""Serving a sequence recommender (``data.interactions.user_tower: sequence``): ``textcl index build --model
OUT/model`` and ``textcl serve`` rank exactly as evaluation does; a new item is its text alone, recommendable at
once and after a restart; a trained item keeps its learned vector when its text changes; a different text encoder
is refused.

The model is a sequence tower trained for three epochs over conftest's tiny random BERT on a ten-film log: its
rankings are arbitrary, so every expectation is computed from the model itself (torch, not the server's code).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_recommend_sequence import _config
from test_recommend_train import _write_log
from test_serve_support import local_client

from textcl.cli import main
from textcl.errors import ConfigError
from textcl.recommend.sequence import left_pad, load
from textcl.serve import create_app
from textcl.serve.schemas import RecommendResponse


@pytest.fixture(scope="module")
def run(tiny_bert_dir, tmp_path_factory):
    """(the run's folder, its index folder, its task): trained, then indexed from OUT/items.jsonl by the CLI."""
    from textcl.recommend.task import load_task
    from textcl.train import train

    root = tmp_path_factory.mktemp("seq")
    log, catalogue = _write_log(root, n_users=16)
    config = _config(tiny_bert_dir, log, catalogue)
    result = train(config, output_dir=root / "run")
    assert main(["index", "build", "--input", str(root / "run" / "items.jsonl"), "--model", str(result.model_dir),
                 "--out", str(root / "ix")]) == 0
    return root / "run", root / "ix", load_task(config.data)


@pytest.fixture()
def client(run, tmp_path):
    import shutil

    ix = tmp_path / "ix"
    shutil.copytree(run[1], ix)
    # no scheduled save during a test: a copy of the folder taken while it runs lacks its writes
    with local_client(create_app(ix, allow_writes=True, save_interval_s=3600),
                      raise_server_exceptions=False) as client:
        yield client


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def model_of(run):
    model, meta = load(run[0] / "model")
    return model, meta["item_ids"]


@torch.no_grad()
def by_hand(model, ids: list[str], history: list[str], extra: torch.Tensor | None = None):
    """(every item's id, its cosine to the user) in the model's own arithmetic: the GRU over the history's item
    vectors (``extra`` (m, d): more item vectors, appended to the catalogue's)."""
    items = model.item_vectors()
    user = model.user_vectors(torch.tensor([left_pad([ids.index(i) for i in history], model.shape.history)]),
                              items)[0, -1]
    if extra is not None:
        items = torch.cat([items, extra])
    return (F.normalize(items, dim=-1) @ F.normalize(user, dim=0)).numpy()


def test_the_served_ranking_is_the_evaluated_one(run, client):
    model, ids = model_of(run)
    task = run[2]
    for user, history in list(zip(task.sets["test"].users, task.sets["test"].history_items))[:6]:
        body = ok(client.post("/recommend", json={"history": list(history), "k": 10}))
        RecommendResponse.model_validate(body)
        scores = by_hand(model, ids, list(history))
        others = [j for j, i in enumerate(ids) if i not in set(history)]
        order = sorted(others, key=lambda j: -scores[j])
        assert [h["id"] for h in body["recommendations"]] == [ids[j] for j in order][:10], user
        assert [h["score"] for h in body["recommendations"]] == pytest.approx([scores[j] for j in order], abs=1e-5)
        assert body["user_text"] is None and body["user_text_cut"] is False
        assert body["settings"] == {"history": 4, "separator": None, "source": "model", "user_tower": "sequence"}


def test_because_names_the_held_entry_whose_item_vector_is_nearest(run, client):
    model, ids = model_of(run)
    history = [ids[0], ids[1], ids[2], ids[3], ids[4]]  # five entries: the model reads the last four
    body = ok(client.post("/recommend", json={"history": history, "k": 5}))
    with torch.no_grad():
        items = F.normalize(model.item_vectors(), dim=-1)
    held = [4, 3, 2, 1]  # positions in the history the GRU read, most recent first
    for hit in body["recommendations"]:
        cos = items[[ids.index(history[p]) for p in held]] @ items[ids.index(hit["id"])]
        best = int(torch.argmax(cos))
        assert hit["because"]["index"] == held[best] and hit["because"]["id"] == history[held[best]]
        assert hit["because"]["score"] == pytest.approx(float(cos[best]), abs=1e-5)


def test_an_item_given_by_its_text_is_a_new_item_and_an_id_carries_its_learned_vector(run, client):
    model, ids = model_of(run)
    task = run[2]
    cold = next(i for i in ids if i in task.cold_items)
    warm = next(i for i in ids if i not in task.cold_items and i in task.counts)
    text = {i: t for i, t in zip(task.item_ids, task.item_texts)}
    by_id = ok(client.post("/recommend", json={"history": [cold], "k": 10, "exclude_history": False}))
    by_text = ok(client.post("/recommend", json={"history": [{"text": text[cold]}], "k": 10}))
    assert [h["id"] for h in by_text["recommendations"]] == [h["id"] for h in by_id["recommendations"]]
    assert [h["score"] for h in by_text["recommendations"]] == pytest.approx(
        [h["score"] for h in by_id["recommendations"]], abs=1e-4)
    warm_id = ok(client.post("/recommend", json={"history": [warm], "k": 10, "exclude_history": False}))
    warm_text = ok(client.post("/recommend", json={"history": [{"text": text[warm]}], "k": 10}))
    assert max(abs(a["score"] - b["score"]) for a, b in zip(
        sorted(warm_id["recommendations"], key=lambda h: h["id"]),
        sorted(warm_text["recommendations"], key=lambda h: h["id"]))) > 1e-3  # the id vector counts


def test_a_new_item_is_recommendable_at_once_and_after_a_restart(run, client, tmp_path):
    model, ids = model_of(run)
    from textcl.recommend.tower import SequenceTower

    tower = SequenceTower.load(run[0] / "model")
    new_text = "Brand New Film (2030). Drama"
    ok(client.post("/documents", json={"documents": [{"id": "new-film", "text": new_text}]}))
    history = [ids[0], ids[1]]
    with torch.no_grad():
        new_vec = model.project(torch.from_numpy(tower.text_encoder.encode([new_text], normalize=True)))
    scores = by_hand(model, ids, history, extra=new_vec)
    body = ok(client.post("/recommend", json={"history": history, "k": 10}))
    got = {h["id"]: h["score"] for h in body["recommendations"]}
    assert "new-film" in got and got["new-film"] == pytest.approx(float(scores[-1]), abs=1e-5)
    # upserting a trained item's text keeps its learned vector and changes its text part
    warm = next(i for i in ids if i not in run[2].cold_items and i in run[2].counts and i not in history)
    ok(client.post("/documents", json={"documents": [{"id": warm, "text": "A Renamed Film"}], "mode": "upsert"}))
    with torch.no_grad():
        renamed = model.project(torch.from_numpy(tower.text_encoder.encode(["A Renamed Film"], normalize=True)))
        renamed = renamed + model.ids.weight[ids.index(warm)]
    scores = by_hand(model, ids, history, extra=renamed)
    got = {h["id"]: h["score"] for h in ok(client.post("/recommend", json={"history": history, "k": 10}))
           ["recommendations"]}
    assert got[warm] == pytest.approx(float(scores[-1]), abs=1e-5)
    # a server killed now: the folder as last saved (without the writes) and the write-ahead log beside it
    import shutil

    killed = tmp_path / "killed" / "ix"
    shutil.copytree(tmp_path / "ix", killed)
    for log in (tmp_path / "ix").parent.glob("ix.wal.sqlite*"):
        shutil.copy(log, killed.parent / log.name)
    # a restart (after a clean stop: the saved folder; after the kill: the log replayed) serves the same vectors
    client.__exit__(None, None, None)
    assert json.loads((killed / "manifest.json").read_text())["n_docs"] == len(ids)  # without the writes
    for ix, replayed in ((tmp_path / "ix", 0), (killed, 2)):
        app = create_app(ix)
        with local_client(app, raise_server_exceptions=False) as again:
            assert app.state.service.replayed == replayed
            assert ok(again.get("/info"))["n_docs"] == len(ids) + 1
            after = {h["id"]: h["score"] for h in ok(again.post("/recommend", json={"history": history, "k": 10}))
                     ["recommendations"]}
        assert after == pytest.approx(got, abs=1e-6), ix


def test_a_text_search_embeds_the_query_as_a_new_item(run, client):
    model, ids = model_of(run)
    from textcl.recommend.tower import SequenceTower

    tower = SequenceTower.load(run[0] / "model")
    q = "an animated film for children"
    body = ok(client.post("/search", json={"queries": [q], "k": 3}))
    with torch.no_grad():
        qv = F.normalize(model.project(torch.from_numpy(tower.text_encoder.encode([q], normalize=True)))[0], dim=0)
        scores = (F.normalize(model.item_vectors(), dim=-1) @ qv).numpy()
    top = np.argsort(-scores)[:3]
    hits = body["results"][0]["hits"]
    assert [h["id"] for h in hits] == [ids[j] for j in top]
    assert [h["score"] for h in hits] == pytest.approx(scores[top].tolist(), abs=1e-5)


def test_info_says_the_user_tower(client):
    assert ok(client.get("/info"))["recommend"] == {"history": 4, "separator": None, "source": "model",
                                                    "user_tower": "sequence"}


def test_dim_and_another_backend_are_refused_for_a_recommender(run, tmp_path, capsys):
    assert main(["index", "build", "--input", str(run[0] / "items.jsonl"), "--model", str(run[0] / "model"),
                 "--out", str(tmp_path / "ix"), "--dim", "4"]) != 0
    assert "--dim: " in capsys.readouterr().err and not (tmp_path / "ix").exists()
    assert main(["index", "build", "--input", str(run[0] / "items.jsonl"), "--model", str(run[0] / "model"),
                 "--out", str(tmp_path / "ix"), "--backend", "onnx"]) != 0
    assert "--backend: " in capsys.readouterr().err and not (tmp_path / "ix").exists()
    with pytest.raises(ConfigError, match=r"--backend.*runs on torch, not onnx"):
        create_app(run[1], backend="onnx")


def test_textcl_backend_from_the_environment_is_refused_for_a_recommender_by_the_cli_too(run, tmp_path, capsys,
                                                                                         monkeypatch):
    monkeypatch.setenv("TEXTCL_BACKEND", "onnx")
    assert main(["index", "build", "--input", str(run[0] / "items.jsonl"), "--model", str(run[0] / "model"),
                 "--out", str(tmp_path / "ix")]) != 0
    assert "runs on torch, not onnx (from --backend or $TEXTCL_BACKEND)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"--backend.*runs on torch, not onnx"):
        create_app(run[1])


def test_a_text_encoder_that_embeds_the_catalogue_otherwise_is_refused(run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from textcl.recommend.tower import SequenceTower

    folder = tmp_path / "model"
    shutil.copytree(run[0] / "model", folder)
    weights = load_file(str(folder / "recommender.safetensors"))
    weights["text"] = F.normalize(weights["text"] + 0.5 * torch.randn_like(weights["text"]), dim=-1)
    save_file(weights, str(folder / "recommender.safetensors"))
    with pytest.raises(ConfigError, match=r"recommender.json: text_encoder.*does not embed the catalogue"):
        SequenceTower.load(folder)
    meta = json.loads((folder / "recommender.json").read_text())
    del meta["item_texts"]
    (folder / "recommender.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"recommender.json: item_texts.*missing"):
        SequenceTower.load(folder)


def test_a_recommender_is_refused_as_an_embeddings_model(run):
    with pytest.raises(ConfigError, match=r"--models.*sequence recommender's folder is no text encoder"):
        with local_client(create_app(models=[str(run[0] / "model")])):
            pass


def test_a_catalogue_whose_trained_ids_carry_other_texts_is_refused(run, tmp_path, capsys):
    lines = (run[0] / "items.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    (tmp_path / "other.jsonl").write_text("\n".join([json.dumps({"id": first["id"], "text": "A kettle, 1.7 l"})]
                                                    + lines[1:]) + "\n")
    assert main(["index", "build", "--input", str(tmp_path / "other.jsonl"), "--model", str(run[0] / "model"),
                 "--out", str(tmp_path / "ix")]) != 0
    err = capsys.readouterr().err
    assert f"other.jsonl: document 1 (id {first['id']!r}) has the id of an item" in err and "'A kettle, 1.7 l'" in err


def test_a_long_history_of_stored_items_is_served_under_a_small_max_pending(run, tmp_path):
    import shutil

    model, ids = model_of(run)
    shutil.copytree(run[1], tmp_path / "ix")
    history = ids[:6]  # more entries than --max-pending, none of them encoded: their text vectors are stored
    with local_client(create_app(tmp_path / "ix", max_pending=2), raise_server_exceptions=False) as c:
        body = ok(c.post("/recommend", json={"history": history, "k": 3}))
    scores = by_hand(model, ids, history)
    assert [h["score"] for h in body["recommendations"]] == pytest.approx(
        sorted((scores[j] for j in range(len(ids)) if ids[j] not in history), reverse=True)[:3], abs=1e-5)
    assert all(h["because"] is not None for h in body["recommendations"])


def test_a_long_document_in_a_history_is_read_as_the_index_holds_it(run, tmp_path):
    import shutil

    from textcl.recommend.tower import SequenceTower

    model, ids = model_of(run)
    tower = SequenceTower.load(run[0] / "model")
    shutil.copytree(run[1], tmp_path / "ix")
    long = "A Long Film (2031). " + "Drama Mystery " * 3  # over --max-query-chars below
    with local_client(create_app(tmp_path / "ix", allow_writes=True, max_query_chars=12),
                      raise_server_exceptions=False) as c:
        ok(c.post("/documents", json={"documents": [{"id": "long", "text": long}]}))
        body = ok(c.post("/recommend", json={"history": [ids[0], "long"], "k": 3}))
    with torch.no_grad():
        x = torch.from_numpy(tower.text_encoder.encode([long], normalize=True))
        items = model.item_vectors()
        h = torch.stack([items[0], model.project(x)[0]])[None]
        user = F.normalize(model.users(torch.cat([torch.zeros(1, model.shape.history - 2, model.shape.dim), h],
                                                 dim=1))[0, -1], dim=0)
        scores = (F.normalize(items, dim=-1) @ user).numpy()
    want = sorted((scores[j] for j in range(1, len(ids))), reverse=True)[:3]
    assert [h["score"] for h in body["recommendations"]] == pytest.approx(want, abs=1e-5)
    assert body["user_text_cut"] is False


def test_a_text_encoder_of_another_width_is_refused_by_name(run):
    from textcl.recommend.tower import SequenceTower

    class Wider:
        name = "wider-model"

        def encode(self, texts, **kwargs):
            return np.ones((len(texts), 7), np.float32) / 7 ** 0.5

    tower = SequenceTower.load(run[0] / "model", check=False)
    tower.text_encoder = Wider()
    with pytest.raises(ConfigError, match=r"text_encoder.*'wider-model' makes 7-dimensional vectors"):
        tower.check_text_encoder()


def test_the_fingerprint_covers_the_recommender_json(run, tmp_path):
    import shutil

    from textcl.index.faiss_index import model_fingerprint

    shutil.copytree(run[0] / "model", tmp_path / "model")
    before = model_fingerprint(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "recommender.json").read_text())
    meta["item_ids"] = list(reversed(meta["item_ids"]))
    (tmp_path / "model" / "recommender.json").write_text(json.dumps(meta))
    assert model_fingerprint(tmp_path / "model") != before


def test_only_a_trained_id_with_another_text_is_refused_and_index_add_checks_too(run, tmp_path, capsys):
    import shutil

    model, ids = model_of(run)
    task = run[2]
    cold = next(i for i in ids if i in task.cold_items)
    warm = next(i for i in ids if i not in task.cold_items and i in task.counts)
    lines = [json.loads(line) for line in (run[0] / "items.jsonl").read_text().splitlines()]
    renamed = [{**d, "text": "Renamed"} if d["id"] == cold else d for d in lines]
    (tmp_path / "cold.jsonl").write_text("".join(json.dumps(d) + "\n" for d in renamed))
    assert main(["index", "build", "--input", str(tmp_path / "cold.jsonl"), "--model", str(run[0] / "model"),
                 "--out", str(tmp_path / "ix")]) == 0  # a held-out item has no learned vector to carry
    shutil.copytree(run[1], tmp_path / "ix2")
    assert main(["index", "delete", str(tmp_path / "ix2"), warm]) == 0
    (tmp_path / "warm.jsonl").write_text(json.dumps({"id": warm, "text": "A kettle"}) + "\n")
    capsys.readouterr()
    assert main(["index", "add", str(tmp_path / "ix2"), "--input", str(tmp_path / "warm.jsonl")]) != 0
    assert f"document 1 (id {warm!r}) has the id of an item" in capsys.readouterr().err
    assert main(["index", "add", str(tmp_path / "ix2"), "--input", str(tmp_path / "warm.jsonl"), "--upsert"]) == 0


def _spy_encodings(monkeypatch):
    """Every text the recommender's text encoder is given, in order."""
    from textcl.recommend.tower import SequenceTower

    seen, real = [], SequenceTower._text_vectors

    def spy(self, texts):
        seen.extend(texts)
        return real(self, texts)

    monkeypatch.setattr(SequenceTower, "_text_vectors", spy)
    return seen


def test_a_request_encodes_each_text_once_and_no_more_than_max_pending(run, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(run[1], tmp_path / "ix")
    docs = [{"id": f"n{i}", "text": f"New film number {i} (2031). " + "Drama " * 200} for i in range(12)]
    with local_client(create_app(tmp_path / "ix", allow_writes=True), raise_server_exceptions=False) as c:
        ok(c.post("/documents", json={"documents": docs}))
    seen = _spy_encodings(monkeypatch)  # a restarted server: no text encoded lately
    history = ["n0", "n1", "n2"]
    with local_client(create_app(tmp_path / "ix", max_pending=5), raise_server_exceptions=False) as c:
        seen.clear()  # the start's check of the text encoder
        body = ok(c.post("/recommend", json={"history": history, "k": 20}))
        # the history's three for the user, then (those three kept) at most --max-pending hits' for because
        assert len(seen) == len(set(seen)) == 3 + 5
        flags = [h["because"] is not None for h in body["recommendations"]]  # the first ones, until the budget
        assert flags == sorted(flags, reverse=True) and 5 <= sum(flags) < len(flags)  # (stored hits cost nothing)
        again = ok(c.post("/recommend", json={"history": history, "k": 20}))
        assert [(h["id"], h["score"]) for h in again["recommendations"]] == \
            [(h["id"], h["score"]) for h in body["recommendations"]]
        # the texts encoded before are kept: the second answer explains more hits, encoding only new texts
        assert len(seen) == len(set(seen)) == 12  # all twelve new films by now, each once
        assert sum(h["because"] is not None for h in again["recommendations"]) > sum(flags)
        assert all(a["because"] == b["because"] for a, b in zip(again["recommendations"], body["recommendations"])
                   if b["because"] is not None)


def test_only_the_texts_to_encode_count_against_max_pending(run, tmp_path, monkeypatch):
    import shutil
    from contextlib import contextmanager

    from textcl.serve.batcher import MicroBatcher

    model, ids = model_of(run)
    shutil.copytree(run[1], tmp_path / "ix")
    sizes, real = [], MicroBatcher.admitted

    @contextmanager
    def spy(self, size):
        sizes.append(size)
        with real(self, size):
            yield

    monkeypatch.setattr(MicroBatcher, "admitted", spy)
    app = create_app(tmp_path / "ix", max_pending=3)
    with local_client(app, raise_server_exceptions=False) as c:
        ok(c.post("/recommend", json={"history": ids[:3] + [{"text": "One"}, {"text": "Two"}], "k": 2,
                                      "because": False}))
        assert sizes == [2]  # the two texts; the stored items cost nothing
        sizes.clear()
        body = ok(c.post("/recommend", json={"history": [{"text": w} for w in "ABCDE"], "k": 2, "because": False}))
        # the model reads the last four of the five texts: counted as a full queue of three
        assert sizes == [3] and len(body["recommendations"]) == 2


def test_texts_to_encode_go_a_chunk_at_a_time_and_the_scoring_encodes_none(run, tmp_path, monkeypatch):
    import shutil

    from textcl.recommend.tower import SequenceTower
    from textcl.serve.service import WRITE_ENCODE_CHUNK

    shutil.copytree(run[1], tmp_path / "ix")
    docs = [{"id": f"n{i}", "text": f"New film number {i} (2031). Drama"} for i in range(40)]
    with local_client(create_app(tmp_path / "ix", allow_writes=True), raise_server_exceptions=False) as c:
        ok(c.post("/documents", json={"documents": docs}))
    calls, real_vectors, real_items = [], SequenceTower._text_vectors, SequenceTower.item_vectors
    phase = ["pre"]

    def vectors(self, texts):
        calls.append((phase[0], len(texts)))
        return real_vectors(self, texts)

    def items(self, *args, **kwargs):  # scoring: after the texts were encoded beforehand
        phase[0] = "scoring"
        try:
            return real_items(self, *args, **kwargs)
        finally:
            phase[0] = "pre"

    monkeypatch.setattr(SequenceTower, "_text_vectors", vectors)
    monkeypatch.setattr(SequenceTower, "item_vectors", items)
    with local_client(create_app(tmp_path / "ix"), raise_server_exceptions=False) as c:
        calls.clear()
        body = ok(c.post("/recommend", json={"history": ["n0", "n1"], "k": 48}))  # every other document
    assert sum(h["because"] is not None for h in body["recommendations"]) == 48
    assert sum(n for _, n in calls) == 40  # every new film once (the catalogue's ten are stored)
    assert all(n <= WRITE_ENCODE_CHUNK for _, n in calls) and len(calls) >= 3
    assert {p for p, _ in calls} == {"pre"}


def test_the_kept_texts_are_items_only_bounded_least_recently_used_and_own_their_memory(run, monkeypatch):
    import textcl.recommend.tower as tower_module
    from textcl.recommend.tower import SequenceTower, _key

    tower = SequenceTower.load(run[0] / "model")
    tower.encode(["a text query"])
    assert len(tower._recent) == 0  # queries are not items
    monkeypatch.setattr(tower_module, "RECENT", 3)
    tower.remember(["A", "B", "C"])
    tower.item_vectors([None], ["A"])  # A used again
    tower.remember(["D"])  # B, the least recently used, goes
    assert tower.missing([None] * 4, ["A", "B", "C", "D"]) == ["B"] and len(tower._recent) == 3
    x = tower._recent[_key("A")]
    assert x.untyped_storage().nbytes() == x.numel() * x.element_size()  # not a view of its batch


def test_because_charges_a_text_once_however_many_hits_share_it(run):
    import asyncio

    from textcl.recommend.tower import SequenceTower
    from textcl.serve.recommend import Entry, _because

    class Service:  # what _because reads of the server
        encoder = SequenceTower.load(run[0] / "model")

        async def item_vectors(self, ids, texts):
            return self.encoder.encode_documents(ids, texts)

    model, ids = model_of(run)
    held = [Entry(0, ids[0], run[2].item_texts[0])]
    hits = [("d1", "Same new text"), ("d2", "Same new text"), ("d3", "Another new text"), (ids[1], run[2].item_texts[1])]
    got = asyncio.run(_because(Service(), held, hits, 2000, 1, "sequence"))
    assert len(got) == 2  # d1 and d2 share their one encoding; d3 would be a second
    hits = [("d4", "A third text"), (ids[1], run[2].item_texts[1]), ("d5", "A fourth text")]
    got = asyncio.run(_because(Service(), held, hits, 2000, 1, "sequence"))
    assert len(got) == 2  # d4, then a stored catalogue item (costs nothing); then d5 would be a second


def test_a_recommender_given_where_a_text_encoder_is_expected_is_named(run, capsys):
    assert main(["encode", "--model", str(run[0] / "model"), "--input", str(run[0] / "items.jsonl"),
                 "--out", str(run[0].parent / "vectors.npy")]) != 0
    assert "a sequence recommender (recommender.json), not a text encoder" in capsys.readouterr().err
