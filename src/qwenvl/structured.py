"""Structured output: turning a ``response_format`` into a JSON schema, and the answer back into data."""

from __future__ import annotations

import json
from typing import Any

from qwenvl.errors import RequestError, StructuredOutputError

__all__ = ["json_schema_of", "parse_structured"]


def json_schema_of(response_format: Any) -> dict[str, Any]:
    """The JSON schema of a ``response_format``: a JSON schema dict, a pydantic model class, or an OpenAI-style
    ``{"type": "json_schema", "json_schema": {"schema": ...}}`` / ``{"type": "json_object"}`` dict.

    Raises `RequestError` when it is none of these or not a valid JSON schema."""
    schema = _schema_of(response_format)
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise RequestError(f"response_format is not a valid JSON schema: {exc.message}; fix the schema.") from exc
    return schema


def _schema_of(response_format: Any) -> dict[str, Any]:
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        return dict(response_format.model_json_schema())
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema" and isinstance(response_format.get("json_schema"), dict):
            schema = response_format["json_schema"].get("schema")
            if not isinstance(schema, dict):
                raise RequestError("response_format json_schema has no 'schema' object; add one.")
            return dict(schema)
        if kind == "json_object":
            return {"type": "object"}
        return dict(response_format)
    raise RequestError(
        f"response_format must be a JSON schema dict or a pydantic model class, got {type(response_format).__name__}."
    )


def parse_structured(text: str, response_format: Any, *, finish_reason: str | None) -> Any:
    """Parse and validate an answer made under ``response_format``.

    Returns a pydantic instance for a pydantic model, else the decoded JSON. Raises `StructuredOutputError`
    (keeping the raw text) when the answer was cut off by ``max_tokens`` or does not validate.
    """
    if finish_reason == "length":
        raise StructuredOutputError(
            "the structured answer was cut off by max_tokens before the JSON was complete; raise max_tokens "
            "or ask for less.",
            raw_text=text,
        )
    try:
        data = json.loads(text, strict=False)  # xgrammar lets raw control characters into strings
    except json.JSONDecodeError as exc:
        raise StructuredOutputError(f"the answer is not valid JSON ({exc}).", raw_text=text) from exc
    if isinstance(response_format, type) and hasattr(response_format, "model_validate"):
        from pydantic import ValidationError

        try:
            return response_format.model_validate(data)
        except ValidationError as exc:
            raise StructuredOutputError(
                f"the answer does not fit {response_format.__name__}: {exc}", raw_text=text
            ) from exc
    schema = json_schema_of(response_format)
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema comes with the core install
        return data
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        raise StructuredOutputError(f"the answer does not fit the schema: {exc.message}", raw_text=text) from exc
    return data
