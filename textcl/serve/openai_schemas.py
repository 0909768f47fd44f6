"""Request and response models of the OpenAI-compatible embeddings API (``/v1/embeddings``, ``/v1/models``).

The request follows OpenAI's schema: ``input`` (a string or a list of strings), ``model``,
``encoding_format`` (``float`` or ``base64``), ``dimensions`` (a Matryoshka cut) and ``user`` (accepted,
ignored), plus two extensions: ``input_type`` (the name of one of the model's sentence-transformers prompts,
e.g. ``query``) and ``truncate`` (false: refuse inputs over the model's token limit instead of cutting them).
Token-id arrays, which OpenAI also takes as ``input``, are refused with a message: this server tokenizes
with each model's own tokenizer. Unknown fields are refused, as OpenAI does.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from textcl.serve.schemas import MAX_TEXT_CHARS, _valid_unicode

TOKEN_IDS = ("token-id arrays are not supported: send the texts as strings (this server tokenizes each text "
             "with its model's own tokenizer)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_ids(value: Any) -> bool:
    """OpenAI's other ``input`` forms: a token id, a list of them, or a list of such lists."""
    if _is_int(value):
        return True
    if not isinstance(value, list) or not value:
        return False
    return all(_is_int(v) for v in value) or all(isinstance(v, list) and all(map(_is_int, v)) for v in value)


def _check_text(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{where} is {type(value).__name__} {value!r:.40}; expected a string")
    if not value:
        raise ValueError(f"{where} is an empty string; expected some text")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{where} holds {len(value):,} characters, over the limit of {MAX_TEXT_CHARS:,}")
    _valid_unicode(value)


def check_input(value: Any, max_inputs: int) -> Any:
    """``input`` as OpenAI sends it, checked before pydantic's own validation: a clear message for token
    ids, an empty or oversized list, and a non-string item (named by its position)."""
    if _token_ids(value):
        raise ValueError(TOKEN_IDS)
    if isinstance(value, str):
        _check_text(value, "the text")
        return value
    if not isinstance(value, list):
        raise ValueError(f"expected a string or a list of strings, got {type(value).__name__}")
    if not value:
        raise ValueError("expected at least one text, got an empty list")
    if len(value) > max_inputs:
        raise ValueError(f"{len(value):,} texts, over the limit of {max_inputs:,} per request (--max-inputs); "
                         "send them in several requests")
    for i, item in enumerate(value):
        _check_text(item, f"item {i}")
    return value


def embeddings_request(max_inputs: int) -> type[BaseModel]:
    """The request model of ``POST /v1/embeddings`` with at most ``max_inputs`` texts."""

    class EmbeddingsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        input: Union[StrictStr, list[StrictStr]] = Field(
            description=f"a text, or a list of 1 to {max_inputs} texts (token-id arrays are not supported)")
        model: StrictStr | None = Field(None, description="a model from GET /v1/models (optional when there is one)")
        encoding_format: Literal["float", "base64"] = Field(
            "float", description="float: lists of numbers; base64: each vector's little-endian float32 bytes")
        dimensions: Annotated[StrictInt, Field(ge=1)] | None = Field(
            None, description="keep the first dimensions of each vector (a Matryoshka cut), renormalised; at "
            "most the model's width")
        user: StrictStr | None = Field(None, description="accepted and ignored")
        input_type: StrictStr | None = Field(
            None, description="textcl extension: one of the model's prompts (e.g. query, passage), put before "
            "each text; default: the model's default prompt, if it has one")
        truncate: StrictBool = Field(
            True, description="textcl extension: true cuts inputs over the model's token limit (the response's "
            "X-Textcl-Truncated-Inputs header counts them); false refuses them")

        @field_validator("input", mode="before")
        @classmethod
        def _input(cls, value: Any) -> Any:
            return check_input(value, max_inputs)

    return EmbeddingsRequest


# ---------------------------------------------------------------- responses (the OpenAPI schema)
class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="the input's position")
    embedding: Union[list[float], str] = Field(description="the vector, or its float32 bytes in base64")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens the model read: prompts and special tokens included, after "
                               "truncation")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "textcl"
    dimensions: int = Field(description="textcl extension: the model's width")
    max_input_tokens: int = Field(description="textcl extension: longer inputs are truncated (or refused)")
    max_inputs: int = Field(description="textcl extension: the most texts one request may hold (--max-inputs)")
    prompts: list[str] = Field(description="textcl extension: the names input_type takes")
    precision: Literal["fp32", "bf16"] | None = Field(None, description="textcl extension: what the model encodes in (--precision)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorDetail(BaseModel):
    message: str = Field(description="what was wrong and what was expected")
    type: str = Field(description="invalid_request_error (4xx) or server_error (5xx)")
    param: str | None = Field(description="the request field at fault")
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail
