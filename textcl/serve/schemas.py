"""Request and response models of the HTTP API (pydantic). They are the OpenAPI schema at ``/docs``.

The limits a request is checked against (``k``, queries per request, hits per request, documents per
request, query length) come from the server's :class:`~textcl.serve.config.ServeConfig` (a recommendation's
history holds at most :data:`MAX_HISTORY` items): :class:`RequestModels` builds the request models with them,
so that the OpenAPI schema states the limits the server enforces.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictFloat, StrictInt,
                      StrictStr, Tag, ValidationInfo, field_validator, model_validator)

MAX_ID_CHARS = 256
MAX_TITLE_CHARS = 1000
MAX_TEXT_CHARS = 100_000
MAX_FILTER_FIELDS = 16
#: items in one POST /recommend history: a long one is mostly left out of the user's text (only the model's last
#: ``history`` items are), but every id in it is looked up and left out of the answer
MAX_HISTORY = 1000
FIELD_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$"
_MAX_DEPTH = 16


def _valid_unicode(value: str) -> str:
    """Reject lone surrogates (JSON allows ``"\\ud800"``; SQLite and the tokenizer need valid UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate code point)") from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain some non-whitespace text")
    return value


def _no_control(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters (tabs, newlines, NUL, ...)")
    return value


def hits_over_limit(n_queries: int, k: int, max_hits: int) -> int:
    """``k``, or ValueError when ``n_queries * k`` hits is more than one request may ask for."""
    if n_queries * k > max_hits:
        raise ValueError(f"{n_queries} {'query' if n_queries == 1 else 'queries'} x k {k} = {n_queries * k} hits, "
                         f"over the limit of {max_hits} hits per request (--max-hits); send fewer queries or a "
                         "smaller k")
    return k


def _plain_json(value: Any, depth: int = 0) -> Any:
    """Metadata must survive JSON both ways: finite numbers, valid Unicode, bounded nesting."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must hold finite numbers only (no NaN or Infinity)")
    if isinstance(value, str):
        _valid_unicode(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _valid_unicode(key)
            _plain_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _plain_json(item, depth + 1)
    return value


Text = Annotated[StrictStr, AfterValidator(_valid_unicode)]
DocId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS,
                                   description="document id: 1-256 characters, no control characters"),
                  AfterValidator(_valid_unicode), AfterValidator(_no_control), AfterValidator(_not_blank)]
Scalar = Union[StrictBool, StrictInt, StrictFloat, Text]
def _field_name(value: str) -> str:
    if not re.fullmatch(FIELD_NAME_PATTERN, value):
        raise ValueError("a metadata field name holds 1-64 letters, digits, _ . : or - (and starts with a letter, "
                         "digit or _)")
    return value


FieldName = Annotated[StrictStr, AfterValidator(_field_name)]
Filter = Annotated[
    dict[FieldName, Scalar],
    Field(max_length=MAX_FILTER_FIELDS, description="metadata fields that must equal these values (all of them); "
          "field names: letters, digits, _ . : -"),
    AfterValidator(_plain_json),
]
Metadata = Annotated[dict[str, Any], AfterValidator(_plain_json)]
HitField = Literal["id", "score", "text", "title", "metadata"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- responses
class Hit(BaseModel):
    """One search hit; each field but ``id`` is left out when the request's ``fields`` leaves it out."""

    id: str
    score: float = Field(None, description="cosine similarity, higher is better")
    text: str = Field(None, description="the text, cut to `text_chars` characters when the request sets it")
    title: str | None = None
    metadata: dict[str, Any] = Field(None, description="metadata other than the title")


class QueryResult(BaseModel):
    query: str
    hits: list[Hit]


class SearchResponse(BaseModel):
    results: list[QueryResult] = Field(description="one entry per query, in the order given")
    k: int
    took_ms: float = Field(description="time in the server, queueing + encoding + search")


class Because(BaseModel):
    """The history entry a recommendation is most like."""

    id: str | None = Field(description="its document id; null for an entry given by its text")
    index: int = Field(description="its position in the request's history (0: the oldest)")
    score: float = Field(description="cosine similarity of its text and the recommendation's text (a sequence "
                         "recommender: of the two items' vectors)")


class RecommendedHit(Hit):
    because: Because | None = Field(description="the history entry it is most like; null past the first 50 "
                                    "recommendations (each costs the encoding of its text) or past what the server's --max-pending "
                                    "lets one request encode, when the request says \"because\": false, or when "
                                    "the server had too many queries waiting to encode them")


class RecommendSettingsOut(BaseModel):
    history: int = Field(description="the user is made of this many of the history's most recent items")
    separator: str | None = Field(description="between their texts, most recent first (null for a sequence "
                                  "recommender)")
    source: Literal["model", "default"] = Field(
        description="model: read from the served model's folder (textcl_recommend.json, written by a recommendation "
        "run); default: that folder has none (the model was not trained for recommendation), so 10 and \" | \"")
    user_tower: Literal["text", "sequence"] = Field(
        "text", description="text: the user is the text of their recent items, embedded like a query; sequence: "
        "a sequence recommender (data.interactions.user_tower: sequence) runs its GRU over their recent items' "
        "vectors")


class RecommendResponse(BaseModel):
    recommendations: list[RecommendedHit] = Field(description="best first; at most k")
    user_text: str | None = Field(description="the text that was embedded as the user (at most --max-query-chars "
                                  "characters); null for a sequence recommender, whose user is no text")
    user_text_cut: bool = Field(description="the history's texts were longer than --max-query-chars and were cut "
                                "there (the encoder reads only its first max_seq_len tokens in any case); always "
                                "false for a sequence recommender, which encodes each entry's text uncut, as the "
                                "index holds it")
    settings: RecommendSettingsOut
    excluded: int = Field(description="distinct history ids left out of the recommendations (0 when "
                          "exclude_history is false)")
    took_ms: float = Field(description="time in the server, lookups + queueing + encoding + search")


class DocumentOut(BaseModel):
    id: str
    text: str
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class WriteResponse(BaseModel):
    written: int = Field(description="documents added or replaced")
    n_docs: int = Field(description="documents in the index after this write")


class DeleteResponse(BaseModel):
    deleted: str
    n_docs: int


class InfoResponse(BaseModel):
    model: str | None
    dim: int
    factory: str
    n_docs: int
    n_vectors: int
    n_tombstones: int
    writes_allowed: bool
    precision: Literal["fp32", "bf16"] | None = Field(None, description="what queries and writes encode in (--precision)")
    batching: dict[str, Any]
    limits: dict[str, int]
    pending_writes: int = Field(description="acknowledged writes not yet in the saved vector index")
    last_save: float | None = Field(description="Unix time of the last save by this server, if any")
    pid: int = Field(description="the process that answered (one of the --workers)")
    recommend: RecommendSettingsOut = Field(description="how POST /recommend turns a history into the user's text")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    n_docs: int


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str = Field(description="a short code: invalid_request, not_found, conflict, unauthorized, ...")
    message: str = Field(description="what was wrong and what was expected")
    fields: list[FieldError] = Field(default_factory=list)


# ---------------------------------------------------------------- requests
def _history_kind(value: Any) -> str:
    """A history entry's branch: an object is an item given by its text, anything else an id. The tags are names
    that :func:`~textcl.serve.errors.field_name` leaves out of a field's name (``history[2].text``)."""
    return "dict" if isinstance(value, dict) else "str"


class RequestModels:
    """The request models for one set of limits: ``SearchRequest``, ``DocumentIn``, ``DocumentsRequest``,
    ``RecommendRequest``."""

    def __init__(self, max_k: int, max_queries: int, max_documents: int, max_query_chars: int,
                 max_hits: int = 1000, max_history: int = MAX_HISTORY):
        Query = Annotated[StrictStr, Field(min_length=1, max_length=max_query_chars),
                          AfterValidator(_valid_unicode), AfterValidator(_not_blank)]

        class SearchRequest(_Model):
            queries: list[Query] = Field(min_length=1, max_length=max_queries,
                                         description=f"1 to {max_queries} query texts")
            k: int = Field(min(10, max_k, max_hits), ge=1, le=max_k, validate_default=True,  # counts when left out
                           description=f"results per query, 1 to {max_k}; queries x k at most {max_hits}")
            filter: Filter | None = None
            fields: list[HitField] | None = Field(
                None, min_length=1, description="what each hit holds, any of id, score, text, title, metadata "
                "(default: all; the id is always there), e.g. [\"id\", \"score\"]")
            text_chars: int | None = Field(None, ge=1, le=MAX_TEXT_CHARS,
                                           description="return at most this many characters of each text")

            @field_validator("k")
            @classmethod
            def _bounded_hits(cls, k: int, info: ValidationInfo) -> int:
                queries = info.data.get("queries")
                return hits_over_limit(len(queries), k, max_hits) if queries else k

        class DocumentIn(_Model):
            id: DocId
            text: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT_CHARS),
                            AfterValidator(_valid_unicode), AfterValidator(_not_blank)]
            title: Annotated[StrictStr, Field(max_length=MAX_TITLE_CHARS), AfterValidator(_valid_unicode)] | None = None
            metadata: Metadata | None = None

            @model_validator(mode="after")
            def _one_title(self):
                other = (self.metadata or {}).get("title")
                if self.title is not None and other is not None and other != self.title:
                    raise ValueError("title and metadata.title differ: give the title once")
                return self

        class DocumentsRequest(_Model):
            documents: list[DocumentIn] = Field(min_length=1, max_length=max_documents)
            mode: Literal["upsert", "add"] = Field(
                "upsert", description="upsert: replace documents whose id exists; add: refuse them (409)")

            @model_validator(mode="after")
            def _unique_ids(self):
                first: dict[str, int] = {}
                for i, doc in enumerate(self.documents):
                    if doc.id in first:
                        raise ValueError(f"documents[{i}].id {doc.id!r} repeats documents[{first[doc.id]}].id; "
                                         "each id may appear once per request")
                    first[doc.id] = i
                return self

        class HistoryText(_Model):
            """An item that is not in the index, given by its text (as the catalogue would give it)."""

            text: Query

        HistoryItem = Annotated[Union[Annotated[DocId, Tag("str")], Annotated[HistoryText, Tag("dict")]],
                                Discriminator(_history_kind)]

        class RecommendRequest(_Model):
            history: list[HistoryItem] = Field(
                min_length=1, max_length=max_history,
                description=f"the user's items in time order: the oldest first, the most recent last; 1 to "
                f"{max_history}. Each is a document id of the index, or {{\"text\": ...}} for an item that is not "
                "in it. The user's text joins the texts of the model's last `history` items, most recent first (a "
                "sequence recommender: its GRU reads the vectors of the last `history` items)")
            k: int = Field(min(10, max_k, max_hits), ge=1, le=max_k, validate_default=True,
                           description=f"recommendations, 1 to {min(max_k, max_hits)}")
            exclude_history: StrictBool = Field(True, description="leave the history's ids out of the "
                                                "recommendations (k are still returned when the index has enough)")
            because: StrictBool = Field(True, description="name, for each of the first 50 recommendations, the "
                                        "history entry it is most like (encodes those texts, counted against the "
                                        "server's --max-pending: null when it is too busy); false: because is null "
                                        "and nothing more is encoded")
            fields: list[HitField] | None = Field(
                None, min_length=1, description="what each recommendation holds besides its id and `because`, any of "
                "id, score, text, title, metadata (default: all)")
            text_chars: int | None = Field(None, ge=1, le=MAX_TEXT_CHARS,
                                           description="return at most this many characters of each text")

            @field_validator("k")
            @classmethod
            def _bounded_hits(cls, k: int) -> int:
                return hits_over_limit(1, k, max_hits)

        self.SearchRequest = SearchRequest
        self.DocumentIn = DocumentIn
        self.DocumentsRequest = DocumentsRequest
        self.HistoryText = HistoryText
        self.RecommendRequest = RecommendRequest
