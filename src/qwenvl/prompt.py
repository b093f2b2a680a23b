"""Rendering conversations through the model's own chat template."""

from __future__ import annotations

import json
from typing import Any, Protocol

from qwenvl.errors import RequestError
from qwenvl.messages import ChatRequest, Image, Message, Text, Video

__all__ = ["ChatTemplate", "PromptRenderer", "to_template_messages"]


class ChatTemplate(Protocol):
    """Anything with transformers' ``apply_chat_template`` (a tokenizer or a processor)."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        """Render a conversation to text."""


def to_template_messages(messages: list[Message] | tuple[Message, ...] | Any) -> list[dict[str, Any]]:
    """Convert qwenvl messages to the list of dicts a Qwen2-VL chat template expects.

    Images and videos become ``{"type": "image"}`` / ``{"type": "video"}`` placeholders, in order; the
    engine supplies the pixels separately.
    """
    out: list[dict[str, Any]] = []
    for msg in messages:
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
            # Hermes convention (Qwen2.5): tool results go back as a user turn inside <tool_response>.
            body = "".join(c.get("text", "") for c in content)
            content = [{"type": "text", "text": f"<tool_response>\n{body}\n</tool_response>"}]
            out.append({"role": "user", "content": content})
            continue
        for call in msg.tool_calls:
            payload = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
            content.append({"type": "text", "text": f"<tool_call>\n{payload}\n</tool_call>"})
        out.append({"role": msg.role, "content": content})
    return out


class PromptRenderer:
    """Renders a `ChatRequest` to the prompt text the model sees, using the model's chat template."""

    def __init__(self, template: ChatTemplate) -> None:
        self._template = template

    def render(self, request: ChatRequest, *, system_prompt: str | None = None) -> str:
        """Return the prompt text, ending with the assistant generation prompt.

        ``system_prompt`` (used for tool definitions) is prepended to the request's own system message,
        or becomes the system message.
        """
        messages = list(request.messages)
        if system_prompt:
            if messages and messages[0].role == "system":
                first = messages[0]
                merged = f"{first.text}\n\n{system_prompt}" if first.text else system_prompt
                messages[0] = Message(role="system", content=merged)
            else:
                messages.insert(0, Message(role="system", content=system_prompt))
        text = self._template.apply_chat_template(
            to_template_messages(messages), tokenize=False, add_generation_prompt=True
        )
        if not isinstance(text, str):  # some processors return a list for batched input
            text = text[0]
        return text
