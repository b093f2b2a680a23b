"""`ChatQwenVL`: Qwen2-VL as a LangChain chat model, over any qwenvl engine."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.runnables.config import ensure_config, get_config_list
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from langchain_qwenvl.convert import to_ai_message, to_ai_message_chunk, to_qwen_messages
from qwenvl import ChatRequest, Engine, SamplingOptions, create_engine
from qwenvl.engine.factory import adapter_retries, model_engine_options, plan_engine
from qwenvl.engine.retry import agenerate_retrying, astream_retrying, generate_retrying, stream_retrying
from qwenvl.errors import RequestError
from qwenvl.messages import ChatChunk
from qwenvl.messages import ChatResult as QwenResult

__all__ = ["ChatQwenVL"]

#: keys of ``model_kwargs`` that go into every request's sampling options; the other keys go to the engine the
#: model builds, which must take them (see `qwenvl.engine.factory`)
SAMPLING_KEYS = frozenset({"top_p", "seed"})


class ChatQwenVL(BaseChatModel):
    """Qwen2-VL (served by vLLM) as a LangChain chat model.

    Give one of ``model`` (a hub id or folder; default $QWENVL_MODEL: an in-process `qwenvl.VLLMEngine` is
    started on first use), ``base_url`` (with ``model``: a `qwenvl.VLLMServerEngine`; a list of URLs spreads
    load over replicas)
    or ``engine`` (any `qwenvl.Engine`, which several chat models may share). ``base_url`` defaults to
    $QWENVL_BASE_URL.

    ``min_pixels``/``max_pixels`` and ``timeout`` (a deadline per call, in seconds) apply to every engine, per
    request. ``max_retries`` retries a call whose failure is transient, on every engine: a server engine this
    model builds retries 408/429/5xx answers and unreachable servers itself (per HTTP attempt); an in-process
    engine, or an ``engine=`` given, is retried here after such failures or after the engine died, which is then
    restarted (`qwenvl.engine.retry`). A stream is retried only before its first piece. ``engine_kwargs``
    configure the engine this model builds (the same option as LlamaIndex `QwenVL`'s); with ``engine=`` they
    raise, as do keys the engine does not take. ``model_kwargs`` holds sampling options (``top_p``, ``seed``).

    Images go in as OpenAI ``image_url`` blocks (http(s) or data URIs), LangChain standard ``image`` blocks
    (``base64`` + ``mime_type``, or ``url``), or Qwen's ``{"type": "image", "image": path_or_url}``, each with
    optional ``min_pixels``/``max_pixels``; videos as ``{"type": "video", "video": path_or_frames}``. A
    block of any other kind raises. ``batch``/``abatch`` send all inputs to the engine as one batch.
    """

    model: str | None = Field(default_factory=lambda: os.environ.get("QWENVL_MODEL"), alias="model_name")
    base_url: str | list[str] | None = Field(default_factory=lambda: os.environ.get("QWENVL_BASE_URL"))
    engine: Any = Field(default=None, exclude=True)
    temperature: float = 0.0
    max_tokens: int = 512
    top_p: float = 1.0
    timeout: float | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    max_retries: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    #: a LoRA adapter (engine-known name or PEFT folder) every call answers with; ``lora=`` per call overrides
    lora: str | None = None
    #: sampling options every call takes (``top_p``, ``seed``)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    #: options of the engine this model builds (the same option as LlamaIndex `QwenVL`'s)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    _engine: Any = PrivateAttr(default=None)
    #: how many times this model sends a transiently failed request again itself (`qwenvl.engine.retry`)
    _retries: int = PrivateAttr(default=0)

    def model_post_init(self, context: Any, /) -> None:
        """Check the arguments against the engine they will reach; the engine itself starts on first use."""
        explicit: set[str] = {"base_url"} if "base_url" in self.model_fields_set and self.base_url else set()
        legacy = sorted(k for k in self.model_kwargs if k not in SAMPLING_KEYS)
        if legacy:
            warnings.warn(
                f"ChatQwenVL: engine options in model_kwargs ({', '.join(legacy)}) are deprecated; pass them as "
                "engine_kwargs (model_kwargs holds sampling options: top_p, seed)",
                DeprecationWarning,
                stacklevel=2,
            )
        explicit |= set(self._engine_kwargs())
        plan_engine(
            "ChatQwenVL",
            engine=self.engine,
            model=self.model,
            base_url=self.base_url,
            options=self._engine_options(),
            explicit=explicit,
        )
        self._engine = self.engine
        self._retries = adapter_retries(self.engine, self.model, self.base_url, self.max_retries)

    # ------------------------------------------------------------------ engine and metadata

    @property
    def qwen_engine(self) -> Engine:
        """The engine this model runs on (started now if it was not yet)."""
        if self._engine is None:
            self._engine = self._build_engine()
        return self._engine

    def _engine_options(self) -> dict[str, Any]:
        """The options of the engine this model builds (None: the engine's default)."""
        return model_engine_options(
            self.model,
            self.base_url,
            self._engine_kwargs(),
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            max_retries=self.max_retries,
            timeout=self.timeout,
        )

    def _engine_kwargs(self) -> dict[str, Any]:
        """``engine_kwargs``, and engine keys still given in ``model_kwargs`` (deprecated)."""
        return {**{k: v for k, v in self.model_kwargs.items() if k not in SAMPLING_KEYS}, **self.engine_kwargs}

    def _build_engine(self) -> Engine:
        return create_engine(self.model, self.base_url, **self._engine_options())

    @property
    def _llm_type(self) -> str:
        return "qwenvl"

    @property
    def _model_name(self) -> str:
        if self.model:
            return self.model
        return str(getattr(self._engine, "model_name", "qwen2-vl"))

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self._model_name,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "lora": self.lora,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="qwenvl",
            ls_model_name=kwargs.get("model") or self._model_name,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # ------------------------------------------------------------------ requests

    def _request(self, messages: list[BaseMessage], stop: list[str] | None = None, **kwargs: Any) -> ChatRequest:
        override = kwargs.get("model")
        if override and override != self._model_name:
            raise RequestError(
                f"this ChatQwenVL runs {self._model_name!r}; a per-call model ({override!r}) is not supported. "
                "Create another ChatQwenVL for another model."
            )
        sampling = SamplingOptions(
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.model_kwargs.get("top_p", self.top_p)),
            stop=stop or kwargs.get("stop") or self.stop,
            seed=kwargs.get("seed", self.model_kwargs.get("seed")),
        )
        return ChatRequest.for_call(
            to_qwen_messages(messages),
            sampling,
            kwargs,
            lora=self.lora,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            timeout=self.timeout,
        )

    def _chat_result(self, result: QwenResult) -> ChatResult:
        result.raise_for_error()
        message = to_ai_message(result, self._model_name)
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"model_name": self._model_name})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        [result] = generate_retrying(self.qwen_engine, [self._request(messages, stop, **kwargs)], self._retries)
        return self._chat_result(result)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        [result] = await agenerate_retrying(self.qwen_engine, [self._request(messages, stop, **kwargs)], self._retries)
        return self._chat_result(result)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, **kwargs)
        hide_text = _forced(request)
        for chunk in stream_retrying(self.qwen_engine, request, self._retries):
            generation = self._generation(chunk, hide_text)
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=generation)
            yield generation

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(messages, stop, **kwargs)
        hide_text = _forced(request)
        async for chunk in astream_retrying(self.qwen_engine, request, self._retries):
            generation = self._generation(chunk, hide_text)
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=generation)
            yield generation

    def _generation(self, chunk: ChatChunk, hide_text: bool) -> ChatGenerationChunk:
        if chunk.error is not None:
            raise chunk.error
        if hide_text:
            chunk.text = ""  # a forced call's JSON arrives as the tool call on the last chunk
        return ChatGenerationChunk(message=to_ai_message_chunk(chunk, self._model_name))

    # ------------------------------------------------------------------ batching: one engine call
    # LangChain's own batch runs invoke per input in a thread pool of at most max_concurrency workers (default:
    # the executor's min(32, CPUs + 4), 6 on a 2-core machine), so vLLM would see a few requests at a time and
    # a batch of 64 would run as about 11 waves. Sending every input in one engine call gives vLLM the whole
    # batch to schedule. LangChain has no hook for that, so batch/abatch open and close each input's run with
    # the callback managers themselves (as BaseChatModel.generate does), keeping per-input callbacks and errors.

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:  # type: ignore[override]
        """Run all inputs as ONE engine batch (vLLM schedules them together), with callbacks per input."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        prepared = self._start_runs(inputs, configs, kwargs, CallbackManager)
        requests = [request for _, request, _ in prepared if request is not None]
        results = generate_retrying(self.qwen_engine, requests, self._retries) if requests else []
        return self._finish_runs(prepared, results, return_exceptions)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:  # type: ignore[override]
        """Async `batch`: one engine batch, awaited without blocking the event loop."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        prepared = self._start_runs(inputs, configs, kwargs, AsyncCallbackManager)
        for i, (managers, request, error) in enumerate(prepared):
            if asyncio.iscoroutine(managers):
                prepared[i] = (await managers, request, error)
        requests = [request for _, request, _ in prepared if request is not None]
        results = await agenerate_retrying(self.qwen_engine, requests, self._retries) if requests else []
        finished = self._finish_runs(prepared, results, return_exceptions, defer=True)
        return _raise_or_keep(await _settle(finished), return_exceptions)

    def _start_runs(
        self, inputs: list[LanguageModelInput], configs: list[RunnableConfig], kwargs: dict[str, Any], manager: Any
    ) -> list[Any]:
        out = []
        stop = kwargs.pop("stop", None)
        for item, cfg in zip(inputs, configs, strict=True):
            cfg = ensure_config(cfg)
            try:
                messages, convert_error = self._convert_input(item).to_messages(), None
            except Exception as exc:  # an input that cannot even be read fails alone
                messages, convert_error = [], exc
            callbacks = manager.configure(
                cfg.get("callbacks"),
                self.callbacks,
                self.verbose,
                cfg.get("tags"),
                self.tags,
                cfg.get("metadata"),
                self.metadata,
            )
            params = {**self._identifying_params, **kwargs, "stop": stop}
            run = callbacks.on_chat_model_start(
                self._serialized,
                [messages],
                invocation_params=params,
                options={"stop": stop, **kwargs},
                name=cfg.get("run_name"),
                run_id=cfg.pop("run_id", None),
                batch_size=len(inputs),
            )
            request, error = None, convert_error
            if convert_error is None:
                try:
                    request = self._request(messages, stop, **kwargs)
                except Exception as exc:  # any failure to build this request is this input's error alone
                    error = exc
            out.append((run, request, error))
        return out  # a request that could not be built fails alone, without reaching the engine

    def _finish_runs(
        self, prepared: list[Any], results: list[QwenResult], return_exceptions: bool, defer: bool = False
    ) -> list[Any]:
        outputs: list[Any] = []
        results_iter = iter(results)
        for managers, request, error in prepared:
            run = managers[0]
            result = next(results_iter) if request is not None else None
            if error is None and result is not None and result.error is not None:
                error = result.error
            if error is not None:
                outputs.append((run.on_llm_error(error, response=LLMResult(generations=[])), error))
                continue
            assert result is not None
            chat = self._chat_result(result)
            generations: list[Any] = list(chat.generations)
            end = run.on_llm_end(LLMResult(generations=[generations], llm_output=chat.llm_output))
            outputs.append((end, chat.generations[0].message))
        if defer:
            return outputs
        messages = [value for _, value in outputs]
        return _raise_or_keep(messages, return_exceptions)

    # ------------------------------------------------------------------ tools and structured output

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (any LangChain tool form); ``tool_choice``: "auto", "none", "any"/"required"/True, or a
        tool name. Forced choices are decoded under the tool's JSON schema, so every call parses."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is True or tool_choice == "any":
            tool_choice = "required"
        elif tool_choice is False:
            tool_choice = "none"
        elif isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
            tool_choice = tool_choice["function"]["name"]
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers that follow ``schema`` (a pydantic model, TypedDict or JSON schema), decoded under it.

        ``method``: "json_schema" (constrained decoding on the schema), "function_calling" (a forced tool
        call) or "json_mode" (any JSON object). ``include_raw`` returns {"raw", "parsed", "parsing_error"}.
        Decoding is always constrained, so ``strict`` changes nothing.
        """
        if kwargs:
            raise RequestError(f"unexpected arguments {sorted(kwargs)}")
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        is_v1_model = isinstance(schema, type) and not is_model and hasattr(schema, "parse_obj")
        trace = {
            "ls_structured_output_format": {
                "kwargs": {"method": method, "strict": strict},
                "schema": convert_to_openai_tool(schema) if schema is not None else None,
            }
        }
        parser: Runnable[Any, Any]
        llm: Runnable[LanguageModelInput, Any]
        if method == "json_mode":
            # With a schema, decode under it (the answer then always fits); without one, any JSON object.
            if schema is None:
                llm = self.bind(response_format={"type": "json_object"}, **trace)
            else:
                llm = self.bind(response_format=schema if is_model else convert_to_json_schema(schema), **trace)
            parser = RunnableLambda(_parsed_from_message)
        elif method == "function_calling":
            if schema is None:
                raise RequestError("method='function_calling' needs a schema.")
            tool = convert_to_openai_tool(schema)
            llm = self.bind_tools([schema], tool_choice=tool["function"]["name"], **trace)
            if is_model:
                parser = PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
            else:
                parser = RunnableLambda(_first_tool_args)
        elif method == "json_schema":
            if schema is None:
                raise RequestError("method='json_schema' needs a schema.")
            llm = self.bind(response_format=schema if is_model else convert_to_json_schema(schema), **trace)
            parser = RunnableLambda(_parsed_from_message)
        else:
            raise RequestError(f"unknown method {method!r}; use json_schema, function_calling or json_mode.")
        if is_v1_model:  # a pydantic.v1 model: decode under its schema, then build it
            parser = parser | RunnableLambda(schema.parse_obj)  # type: ignore[union-attr,operator]
        if not include_raw:
            return llm | parser
        parse_safely = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        ).with_fallbacks([RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error")
        return RunnableMap(raw=llm) | parse_safely


def _forced(request: ChatRequest) -> bool:
    return bool(request.tools) and request.tool_choice not in (None, "auto", "none")


def _parsed_from_message(message: AIMessage) -> Any:
    if "parsed" in message.additional_kwargs:
        return message.additional_kwargs["parsed"]
    return JsonOutputParser().invoke(message)


def _first_tool_args(message: AIMessage) -> Any:
    if not message.tool_calls:
        raise RequestError("the model made no tool call")
    return message.tool_calls[0]["args"]


def _raise_or_keep(values: list[Any], return_exceptions: bool) -> list[Any]:
    if not return_exceptions:
        for value in values:
            if isinstance(value, BaseException):
                raise value
    return values


async def _settle(outputs: list[Any]) -> list[Any]:
    values = []
    for pending, value in outputs:
        if asyncio.iscoroutine(pending):
            await pending
        values.append(value)
    return values
