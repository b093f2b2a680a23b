"""Rendering conversations through the model's own chat template."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from qwenvl.errors import RequestError, StructuredOutputError
from qwenvl.messages import ChatRequest, Image, InvalidToolCall, Message, Text, ToolCall, Video
from qwenvl.models import QWEN2_VL, ModelProfile

__all__ = [
    "ChatTemplate",
    "PromptRenderer",
    "forced_tool_schema",
    "normalize_tool",
    "parse_forced_call",
    "parse_tool_calls",
    "to_template_messages",
    "tools_system_prompt",
    "with_system_prompt",
]


class ChatTemplate(Protocol):
    """Anything with transformers' ``apply_chat_template`` (a tokenizer or a processor)."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        """Render a conversation to text."""


def to_template_messages(
    messages: list[Message] | tuple[Message, ...] | Any, *, native_tools: bool = False
) -> list[dict[str, Any]]:
    """Convert qwenvl messages to the list of dicts a Qwen-VL chat template expects.

    Images and videos become ``{"type": "image"}`` / ``{"type": "video"}`` placeholders, in order; the
    engine supplies the pixels separately. With ``native_tools`` (a template that renders tools itself, as
    Qwen3-VL's), tool results keep the role "tool" and calls go in ``tool_calls``; otherwise both are
    written as Hermes text the way Qwen2.5's template would.
    """
    out: list[dict[str, Any]] = []
    for msg in messages:
        if native_tools and (msg.role == "tool" or msg.tool_calls):
            out.append(_native_tool_message(msg))
            continue
        if isinstance(msg.content, str) and msg.role != "tool" and not msg.tool_calls:
            out.append({"role": msg.role, "content": msg.content})
            continue
        content: list[dict[str, Any]] = []
        for part in msg.parts():
            if isinstance(part, Text):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, Image):
                content.append({"type": "image"})
            elif isinstance(part, Video):
                content.append({"type": "video"})
            else:  # pragma: no cover - Message validates its parts
                raise RequestError(f"cannot render message part {type(part).__name__}")
        if msg.role == "tool":
            # Hermes convention (Qwen2.5): tool results go back as a user turn inside <tool_response>;
            # images a tool returns stay in place between the tags.
            content = [
                {"type": "text", "text": "<tool_response>\n"},
                *content,
                {"type": "text", "text": "\n</tool_response>"},
            ]
            out.append({"role": "user", "content": _merge_text(content)})
            continue
        for call in msg.tool_calls:
            payload = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
            content.append({"type": "text", "text": f"<tool_call>\n{payload}\n</tool_call>"})
        out.append({"role": msg.role, "content": content})
    return out


def _native_tool_message(msg: Message) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for part in msg.parts():
        if isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        else:
            content.append({"type": "image" if isinstance(part, Image) else "video"})
    out: dict[str, Any] = {"role": msg.role, "content": content if msg.role == "tool" else msg.text}
    if msg.tool_calls:
        out["tool_calls"] = [
            {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in msg.tool_calls
        ]
    return out


def with_system_prompt(messages: Any, system_prompt: str | None) -> list[Message]:
    """``messages`` with ``system_prompt`` appended to their system message (or as a new first message)."""
    out = list(messages)
    if not system_prompt:
        return out
    if out and out[0].role == "system":
        first = out[0]
        out[0] = Message(role="system", content=f"{first.text}\n\n{system_prompt}" if first.text else system_prompt)
    else:
        out.insert(0, Message(role="system", content=system_prompt))
    return out


def _merge_text(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join neighbouring text parts (the template concatenates them anyway)."""
    out: list[dict[str, Any]] = []
    for part in content:
        if part["type"] == "text" and out and out[-1]["type"] == "text":
            out[-1] = {"type": "text", "text": out[-1]["text"] + part["text"]}
        else:
            out.append(part)
    return out


class PromptRenderer:
    """Renders a `ChatRequest` to the prompt text the model sees, using the model's chat template."""

    def __init__(self, template: ChatTemplate, *, profile: ModelProfile = QWEN2_VL) -> None:
        self._template = template
        self._native_tools = profile.template_tools

    def render(
        self, request: ChatRequest, *, system_prompt: str | None = None, tools: list[dict[str, Any]] | None = None
    ) -> str:
        """Return the prompt text, ending with the assistant generation prompt.

        ``tools`` go to a template that renders tools itself (Qwen3-VL); for one that does not (Qwen2-VL,
        Qwen2.5-VL), pass their Hermes description as ``system_prompt``, which is appended to the request's
        own system message, or becomes the system message.
        """
        extra: dict[str, Any] = {}
        if tools and self._native_tools:
            extra["tools"] = [normalize_tool(t) for t in tools]
        messages = with_system_prompt(request.messages, None if extra else system_prompt)
        text = self._template.apply_chat_template(
            to_template_messages(messages, native_tools=self._native_tools),
            tokenize=False,
            add_generation_prompt=True,
            **extra,
        )
        if not isinstance(text, str):  # some processors return a list for batched input
            text = text[0]
        return text


# ---------------------------------------------------------------------- tool calling (Hermes format)

_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def normalize_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool definition in the OpenAI function format: ``{"type": "function", "function": {name, ...}}``."""
    fn = tool.get("function", tool) if tool.get("type", "function") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise RequestError(
            f"a tool must be {{'type': 'function', 'function': {{'name': ..., 'parameters': {{...}}}}}}, got {tool!r}."
        )
    fn = {"name": fn["name"], **{k: v for k, v in fn.items() if k != "name"}}
    fn.setdefault("parameters", {"type": "object", "properties": {}})
    return {"type": "function", "function": fn}


def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """The system-prompt section that describes ``tools`` the way Qwen2.5's template does (Hermes style)."""
    lines = "".join("\n" + json.dumps(normalize_tool(t), ensure_ascii=False) for t in tools)
    return _TOOLS_HEADER + lines + _TOOLS_FOOTER


def forced_tool_schema(tools: list[dict[str, Any]], tool_choice: str | dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one call of a tool in ``tools`` (of the named one, when ``tool_choice`` names one):
    ``{"name": ..., "arguments": {...}}``, used to force a valid call with structured outputs."""
    fns = [normalize_tool(t)["function"] for t in tools]
    name = _choice_name(tool_choice)
    if name is not None:
        fns = [f for f in fns if f["name"] == name]
        if not fns:
            raise RequestError(f"tool_choice names {name!r}, which is not among the request's tools.")
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in fns
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def _choice_name(tool_choice: str | dict[str, Any]) -> str | None:
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function", tool_choice)
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise RequestError(f"tool_choice {tool_choice!r} names no function; use {{'function': {{'name': ...}}}}.")
        return name
    if tool_choice in ("auto", "none", "required", "any"):
        return None
    return tool_choice  # a bare tool name


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Split an answer into its text and its ``<tool_call>`` blocks.

    Returns (text without the blocks, valid calls, malformed calls with their raw text and the reason).
    """
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for match in _TOOL_CALL.finditer(text):
        raw = match.group(1)
        call, error = _parse_call(raw)
        if call is not None:
            calls.append(call)
        else:
            invalid.append(InvalidToolCall(raw=raw, error=error))
    rest = _TOOL_CALL.sub("", text).strip() if (calls or invalid) else text
    return rest, calls, invalid


def parse_forced_call(text: str) -> ToolCall:
    """Parse the JSON a forced tool call was decoded to; raises `StructuredOutputError` with the raw text."""
    call, error = _parse_call(text)
    if call is None:
        raise StructuredOutputError(f"the forced tool call did not parse: {error}", raw_text=text)
    return call


def _parse_call(raw: str) -> tuple[ToolCall | None, str]:
    try:
        data = json.loads(raw, strict=False)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None, 'expected {"name": ..., "arguments": {...}}'
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # some models send arguments as a JSON string
        try:
            arguments = json.loads(arguments, strict=False)
        except json.JSONDecodeError as exc:
            return None, f"arguments are not valid JSON ({exc})"
    if not isinstance(arguments, dict):
        return None, "arguments must be a JSON object"
    try:
        return ToolCall(name=data["name"], arguments=arguments), ""
    except RequestError as exc:  # e.g. NaN in the arguments, or an empty name
        return None, str(exc)
