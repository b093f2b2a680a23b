"""How a `ChatRequest` becomes what an engine runs, and how an answer is read back; shared by every engine.

Preparation turns a `ChatRequest` into what a backend runs: media loaded under the media policy, every image
resized to its own pixel budget (so the token cost is known here, before anything runs, and per-image limits
hold even inside one request), images shrunk further when the prompt would not fit the context, and the
prompt rendered through the model's chat template. `finalize` reads a finished answer according to the
request's mode (JSON, tool calls, a forced call).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from qwenvl import media
from qwenvl._lazy import require as _require
from qwenvl.errors import ContextOverflowError, RequestError, StructuredOutputError
from qwenvl.messages import ChatRequest, ChatResult, Image, Video
from qwenvl.models import FRAME_FACTOR, MAX_RATIO, QWEN2_VL, ModelProfile, load_profile
from qwenvl.prompt import (
    ChatTemplate,
    PromptRenderer,
    forced_tool_schema,
    normalize_tool,
    parse_forced_call,
    parse_tool_calls,
    tools_system_prompt,
)
from qwenvl.structured import json_schema_of, parse_structured

if TYPE_CHECKING:
    import numpy as np
    import PIL.Image

__all__ = ["EngineDefaults", "PreparedRequest", "RequestPreparer", "finalize", "fit_to_context"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineDefaults:
    """Per-engine defaults applied to requests that do not set their own (pixel defaults per model family)."""

    min_pixels: int = QWEN2_VL.min_pixels
    max_pixels: int = QWEN2_VL.default_max_pixels
    video_min_pixels: int = QWEN2_VL.video_min_pixels
    video_max_pixels: int = QWEN2_VL.video_max_pixels
    limit_images: int = 4
    limit_videos: int = 1
    #: shrink images to fit the context rather than fail
    fit_to_context: bool = True
    policy: media.MediaPolicy = field(default_factory=media.MediaPolicy)

    @classmethod
    def create(
        cls,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        limit_images: int = 4,
        limit_videos: int = 1,
        fit_to_context: bool = True,
        media_policy: media.MediaPolicy | None = None,
        profile: ModelProfile = QWEN2_VL,
    ) -> EngineDefaults:
        """Defaults from engine arguments, where None keeps the default of the model family ``profile``."""
        base = cls()
        return cls(
            min_pixels=min_pixels or profile.min_pixels,
            max_pixels=max_pixels or profile.default_max_pixels,
            video_min_pixels=profile.video_min_pixels,
            video_max_pixels=profile.video_max_pixels,
            limit_images=limit_images,
            limit_videos=limit_videos,
            fit_to_context=fit_to_context,
            policy=media_policy or base.policy,
        )


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready for a backend: prompt text, media, the processor's size limits and the token counts.
    Immutable: an engine that adds its own handle (a LoRA adapter) makes a copy (`dataclasses.replace`), and
    what an engine keeps while a request is in flight is its own (`qwenvl.engine.server_images.SentImages`).

    Images are passed as loaded when one pair of pixel limits serves them all (the processor resizes them
    to exactly the size `smart_resize` predicts); otherwise each is resized here to its own limits and the
    processor's limits bracket the results so it keeps them. Video frames are always resized here.
    """

    request: ChatRequest
    prompt: str
    images: list[PIL.Image.Image]
    videos: list[np.ndarray]
    image_tokens: list[int]
    video_tokens: list[int]
    prompt_tokens: int
    image_size: dict[str, int] | None = None
    #: how the answer is read: "text", "json" (response_format), "tools" (may call tools), "forced_tool"
    mode: str = "text"
    #: the JSON schema decoding is constrained to (response_format, or a forced tool call)
    constraint: dict[str, Any] | None = None
    #: text added to the system prompt (tool definitions)
    system_prompt: str | None = None
    #: (min_pixels, max_pixels) each image was planned with
    image_limits: list[tuple[int, int]] = field(default_factory=list)
    #: the engine's handle of the request's LoRA adapter (None: the base model)
    lora: Any = None
    #: the model family the request was planned for
    profile: ModelProfile = QWEN2_VL
    #: per video, what the processor needs to know of its frames (fps, sampled frame indices, total frames)
    video_metadata: list[dict[str, Any]] = field(default_factory=list)
    #: per image, its file's bytes when ``images`` holds it as that file decodes (unresized): a server engine
    #: sends those bytes as they are (`qwenvl.media.load_image_encoded`)
    originals: list[media.EncodedImage | None] = field(default_factory=list, repr=False, compare=False)

    @property
    def mm_data(self) -> dict[str, Any]:
        """The multimodal data in vLLM's ``multi_modal_data`` form."""
        data: dict[str, Any] = {}
        if self.images:
            data["image"] = self.images
        if self.videos:
            if self.profile.video_time != "none":  # time (absolute or stamps) comes from the frames' metadata
                data["video"] = list(zip(self.videos, self.video_metadata, strict=True))
            else:
                data["video"] = self.videos
        return data

    @property
    def mm_processor_kwargs(self) -> dict[str, Any]:
        """The processor's size limits, per modality, in vLLM's ``mm_processor_kwargs`` form."""
        kwargs: dict[str, Any] = {}
        if self.images:
            kwargs["images_kwargs"] = {"size": self.image_size}
        if self.videos:
            areas = [self.profile.video_size(v.shape[0], v.shape[1], v.shape[2]) for v in self.videos]
            videos_kwargs: dict[str, Any] = {"size": {"shortest_edge": min(areas), "longest_edge": max(areas)}}
            if self.profile.video_time != "none":
                # frames arrive sampled: the processor must not sample again, and needs their rate for time
                videos_kwargs["do_sample_frames"] = False
            kwargs["videos_kwargs"] = videos_kwargs
        return kwargs


class RequestPreparer:
    """Loads, resizes, fits and renders requests for one model."""

    def __init__(
        self,
        template: ChatTemplate,
        tokenizer: Any,
        *,
        defaults: EngineDefaults,
        max_model_len: int,
        image_token_id: int,
        video_token_id: int,
        profile: ModelProfile = QWEN2_VL,
    ) -> None:
        self.renderer = PromptRenderer(template, profile=profile)
        #: the chat template's owner (transformers' processor, or a tokenizer)
        self.template = template
        self.tokenizer = tokenizer
        self.defaults = defaults
        self.max_model_len = max_model_len
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.profile = profile
        #: decode every image here; False (a server engine): files the server takes as they are (JPEG, PNG,
        #: WebP in RGB) are checked, sized and sent without being decoded (`qwenvl.media.load_image_encoded`)
        self.decode_images = True

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        defaults: EngineDefaults,
        max_model_len: int,
        extra: str,
        profile: ModelProfile | None = None,
        **kwargs: Any,
    ) -> RequestPreparer:
        """A preparer with the chat template and tokenizer of model ``name`` (hub id or folder), loaded with
        transformers' ``AutoProcessor``, for the family its config names (or ``profile``); ``extra`` names
        the qwenvl extra to install when it is missing."""
        transformers = _require("transformers", extra)
        processor = transformers.AutoProcessor.from_pretrained(name, **kwargs)
        if profile is None:
            profile = load_profile(name, **{k: v for k, v in kwargs.items() if k == "revision"})
        return cls(
            processor,
            processor.tokenizer,
            defaults=defaults,
            max_model_len=max_model_len,
            image_token_id=int(processor.image_token_id),
            video_token_id=int(processor.video_token_id),
            profile=profile,
        )

    def prepare(self, request: ChatRequest) -> PreparedRequest:
        """Prepare one request; raises a `QwenVLError` naming the input when it cannot run."""
        if not isinstance(request, ChatRequest):
            raise RequestError(f"engines take ChatRequest objects, got {type(request).__name__}.")
        request.sampling.validate()
        d = self.defaults
        mode, constraint, system_prompt = _decoding_plan(request)
        images, videos = request.images(), request.videos()
        if len(images) > d.limit_images:
            raise RequestError(
                f"the request has {len(images)} images but the engine allows {d.limit_images} per prompt; "
                "send fewer or raise the engine's limit_images."
            )
        if len(videos) > d.limit_videos:
            raise RequestError(
                f"the request has {len(videos)} videos but the engine allows {d.limit_videos} per prompt; "
                "send fewer or raise the engine's limit_videos."
            )
        loaded = [media.load_image_encoded(img.source, d.policy, decode=self.decode_images) for img in images]
        pictures = iter([image for image, _ in loaded])
        request = request.map_images(lambda img: replace(img, source=next(pictures)))
        profile = self.profile
        loaded_videos = [self._load_video(v) for v in videos]
        frames = [f for f, _ in loaded_videos]
        metadata = [m for _, m in loaded_videos]
        video_tokens = [profile.video_tokens(f.shape[0], f.shape[1], f.shape[2]) for f in frames]
        # Qwen3-VL writes "<t seconds>" text before each frame pair: text tokens the template does not show.
        stamp_tokens = sum(self._timestamp_tokens(m, f.shape[0]) for f, m in loaded_videos)

        tools = list(request.tools or []) if system_prompt else None
        prompt = self.renderer.render(request, system_prompt=system_prompt, tools=tools)
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        text_tokens = sum(1 for t in ids if t not in (self.image_token_id, self.video_token_id)) + stamp_tokens
        if d.fit_to_context:
            request = fit_to_context(
                request,
                self.max_model_len,
                text_tokens=text_tokens,
                video_tokens=sum(video_tokens),
                min_pixels=d.min_pixels,
                max_pixels=d.max_pixels,
                profile=profile,
            )
        pil_images: list[PIL.Image.Image] = [img.source for img in request.images()]  # type: ignore[misc]
        limits = [
            profile.image_limits(img.min_pixels, img.max_pixels, default_min=d.min_pixels, default_max=d.max_pixels)
            for img in request.images()
        ]
        pairs = list(zip(pil_images, limits, strict=True))
        sizes = [profile.smart_resize(im.height, im.width, lo, hi) for im, (lo, hi) in pairs]
        image_tokens = [profile.grid_tokens(h, w) for h, w in sizes]
        image_size = None
        if pil_images:
            if len(set(limits)) == 1 and not any(_extreme(im, profile.factor) for im in pil_images):
                image_size = {"shortest_edge": limits[0][0], "longest_edge": limits[0][1]}
            else:
                pil_images = [media.resize_image(im, lo, hi, factor=profile.factor) for im, (lo, hi) in pairs]
                areas = [h * w for h, w in sizes]
                image_size = {"shortest_edge": min(areas), "longest_edge": max(areas)}
        originals = [enc if im is image else None for im, (image, enc) in zip(pil_images, loaded, strict=True)]
        return PreparedRequest(
            request=request,
            prompt=prompt,
            images=pil_images,
            videos=frames,
            image_tokens=image_tokens,
            video_tokens=video_tokens,
            prompt_tokens=text_tokens + sum(image_tokens) + sum(video_tokens),
            image_size=image_size,
            mode=mode,
            constraint=constraint,
            system_prompt=system_prompt,
            image_limits=limits,
            profile=profile,
            video_metadata=metadata,
            originals=originals,
        )

    def _load_video(self, video: Video) -> tuple[np.ndarray, dict[str, Any]]:
        d = self.defaults
        factor = self.profile.factor
        frames, info = media.load_video(
            video.source, fps=video.fps, nframes=video.nframes, sample_fps=video.sample_fps, policy=d.policy
        )
        lo = video.min_pixels or d.video_min_pixels
        hi = video.max_pixels or d.video_max_pixels
        # As qwen-vl-utils: a total pixel budget spread over the frames, never below min_pixels.
        total = self.max_model_len // 2 * factor**2
        hi = max(min(hi, total // len(frames) * FRAME_FACTOR), min(int(lo * 1.05), hi))
        lo = min(lo, hi)
        resized = [media.resize_image(f, lo, hi, factor=factor) for f in frames]
        return media.frames_to_array(resized), _video_metadata(info, len(frames))

    def _timestamp_tokens(self, metadata: dict[str, Any], nframes: int) -> int:
        """Tokens Qwen3-VL's processor adds to a video's placeholder (0 for other families): per frame pair, its
        ``<t seconds>`` stamp and a ``<|vision_start|>``/``<|vision_end|>`` pair around the pair's pads."""
        if self.profile.video_time != "timestamps":
            return 0
        stamps = video_timestamps(metadata, self.profile.temporal_patch_size)[: nframes // 2]
        return sum(len(self.tokenizer.encode(f"<{t:.1f} seconds>", add_special_tokens=False)) + 2 for t in stamps)


def _video_metadata(sampled_fps: float, nframes: int) -> dict[str, Any]:
    """What a processor needs to know of frames already sampled: one clip of ``nframes`` frames at the rate
    they were sampled at (so frame i is at i / fps seconds of the original video)."""
    fps = float(sampled_fps) if sampled_fps and sampled_fps > 0 else 2.0
    return {"fps": fps, "frames_indices": list(range(nframes)), "total_num_frames": nframes, "duration": nframes / fps}


def video_timestamps(metadata: dict[str, Any], temporal_patch_size: int = 2) -> list[float]:
    """Seconds of each frame pair, as Qwen3-VL's processor computes them (mean time of the pair)."""
    times = [i / metadata["fps"] for i in metadata["frames_indices"]]
    if len(times) % temporal_patch_size:
        times += [times[-1]] * (temporal_patch_size - len(times) % temporal_patch_size)
    return [(times[i] + times[i + temporal_patch_size - 1]) / 2 for i in range(0, len(times), temporal_patch_size)]


def fit_to_context(
    request: ChatRequest,
    max_model_len: int,
    *,
    text_tokens: int,
    video_tokens: int = 0,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    reserve: int | None = None,
    profile: ModelProfile | None = None,
) -> ChatRequest:
    """Return ``request`` with per-image ``max_pixels`` lowered just enough that its prompt, plus the
    answer's ``max_tokens`` (or ``reserve``), fits ``max_model_len``.

    Images must be loaded (their `Image.size` known); ``min_pixels``/``max_pixels`` are the defaults for
    images without their own limits; ``text_tokens`` and ``video_tokens`` count the rest of the prompt.
    One pixel cap is searched for all images, so large images shrink first and small ones stay sharp.
    ``profile`` is the model family (default Qwen2-VL); None limits are the engines' defaults for it
    (`ModelProfile.image_limits`).
    Raises `ContextOverflowError` saying by how many tokens the prompt overflows at the smallest size.
    """
    fam = profile or QWEN2_VL
    unit = fam.factor**2
    images = request.images()
    room = max_model_len - (request.sampling.max_tokens if reserve is None else reserve)
    fixed = text_tokens + video_tokens

    def limits(img: Image) -> tuple[int, int]:
        return fam.image_limits(img.min_pixels, img.max_pixels, default_min=min_pixels, default_max=max_pixels)

    def cost(cap: int | None) -> int:
        total = fixed
        for img in images:
            if img.size is None:
                raise RequestError("fit_to_context needs loaded images (PIL sources); load them first")
            lo, hi = limits(img)
            if cap is not None:
                hi, lo = min(hi, cap), min(lo, cap)
            total += fam.image_tokens(img.size[0], img.size[1], lo, hi)
        return total

    needed = cost(None)
    if needed <= room:
        return request
    floor = 4  # visual tokens: qwen-vl-utils' smallest image in every family
    if not images or cost(floor * unit) > room:
        smallest = cost(floor * unit) if images else needed
        raise ContextOverflowError(
            f"the prompt needs {needed} tokens ({smallest} with every image at its smallest) but only {room} fit "
            f"(max_model_len {max_model_len} minus {max_model_len - room} kept for the answer): "
            f"{smallest - room} tokens too many. Shorten the text, send fewer images or videos, lower max_tokens, "
            "or raise max_model_len.",
            prompt_tokens=smallest,
            max_model_len=room,
        )
    top = max(limits(img)[1] for img in images) // unit
    lo_cap, hi_cap = floor, top  # cost(lo_cap) fits, cost(hi_cap) does not
    while hi_cap - lo_cap > 1:
        mid = (lo_cap + hi_cap) // 2
        if cost(mid * unit) <= room:
            lo_cap = mid
        else:
            hi_cap = mid
    cap = lo_cap * unit

    def shrink(img: Image) -> Image:
        lo, hi = limits(img)
        if hi <= cap:
            return img
        return replace(img, min_pixels=min(lo, cap), max_pixels=cap)

    return request.map_images(shrink)


def _decoding_plan(request: ChatRequest) -> tuple[str, dict[str, Any] | None, str | None]:
    """(mode, JSON-schema constraint, extra system prompt) for a request's response_format and tools."""
    tools = [normalize_tool(t) for t in request.tools or []]
    choice = request.tool_choice if request.tool_choice is not None else ("auto" if tools else None)
    if choice not in (None, "none") and not tools:
        raise RequestError(f"tool_choice is {choice!r} but the request has no tools; add tools or drop tool_choice.")
    forced = tools and choice not in (None, "none", "auto")
    if request.response_format is not None:
        if forced:
            raise RequestError("a request cannot force a tool call and a response_format at once; drop one.")
        system = tools_system_prompt(tools) if tools and choice == "auto" else None
        return "json", json_schema_of(request.response_format), system
    if forced:
        return "forced_tool", forced_tool_schema(tools, choice), tools_system_prompt(tools)  # type: ignore[arg-type]
    if tools and choice == "auto":
        return "tools", None, tools_system_prompt(tools)
    return "text", None, None


def finalize(result: ChatResult, prep: PreparedRequest) -> ChatResult:
    """Read a finished answer according to the request's mode: parse JSON, tool calls, or a forced call.

    A structured answer that does not parse or validate sets ``error`` (a `StructuredOutputError` keeping the
    raw text) while ``text`` keeps what the model wrote.
    """
    if result.error is not None:
        return result
    try:
        if prep.mode == "json":
            result.parsed = parse_structured(
                result.text, prep.request.response_format, finish_reason=result.finish_reason
            )
        elif prep.mode == "forced_tool":
            if result.finish_reason == "length":
                raise StructuredOutputError(
                    "the forced tool call was cut off by max_tokens; raise max_tokens.", raw_text=result.text
                )
            call = parse_forced_call(result.text)
            _validate_arguments(call.name, call.arguments, prep)
            result.tool_calls = [call]
            result.text = ""  # the JSON was the call itself
            result.finish_reason = "tool_calls"
        elif prep.mode == "tools":
            text, calls, invalid = parse_tool_calls(result.text)
            result.text, result.tool_calls, result.invalid_tool_calls = text, calls, invalid
            if calls:
                result.finish_reason = "tool_calls"
    except StructuredOutputError as exc:
        result.error = exc
    return result


def _validate_arguments(name: str, arguments: dict[str, Any], prep: PreparedRequest) -> None:
    import jsonschema

    for tool in prep.request.tools or []:
        fn = normalize_tool(tool)["function"]
        if fn["name"] == name:
            try:
                jsonschema.validate(arguments, fn["parameters"])
            except jsonschema.ValidationError as exc:
                raise StructuredOutputError(
                    f"the arguments of the call of {name!r} do not fit its schema: {exc.message}",
                    raw_text=json.dumps(arguments),
                ) from exc
            return
    raise StructuredOutputError(f"the model called {name!r}, which is not among the tools.", raw_text=name)


def _extreme(image: PIL.Image.Image, factor: int) -> bool:
    """Shapes where the transformers processor's own resize differs from `smart_resize` (see budget)."""
    short, long = sorted(image.size)
    return short < factor or long > short * (MAX_RATIO * 3 // 4)
