"""MIO's single-reply skills as capabilities: captions, answers, images, speech in and out, video, charts."""

from __future__ import annotations

from mio_agent import hookimpl
from mio_agent.capability import Capability, Trigger

__all__ = ["SKILLS", "mio_agent_capabilities"]

# an image block is 34 tokens (markers included) and the stop token one more: room for exactly one
_ONE_IMAGE = 40
# reference prompts (mio-format.md), verbatim
_ASR = "Please transcribe this speech.\n{speech}"
_TTS = (
    "The transcription is ``{text}''. Please generate a speech according to the given transcription. "
    "Start with <spch>."
)
_SPEECH_UNDERSTANDING = "{speech}\nPlease continue the story."

SKILLS: tuple[Capability, ...] = (
    Capability(
        name="text_generation",
        description="Answer or continue a text prompt with text.",
        inputs=("text",),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt="{text}",
        trigger=Trigger(explicit_only=True),
        prompt_source="project",
        covers=("text generation",),
    ),
    Capability(
        name="describe_image",
        description="Describe an image in a few sentences.",
        inputs=("image",),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt="{image}\nPlease describe this image in detail.",
        trigger=Trigger(
            keywords=("describe this image", "describe the image", "what do you see", "caption"),
            needs=("image",),
        ),
        prompt_source="project",
        covers=("image captioning",),
    ),
    Capability(
        name="image_qa",
        description="Answer a question about an image.",
        inputs=("image", "text"),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt="{image}\n{text}",
        trigger=Trigger(patterns=(r"\b(in|on|of) (this|the) (image|picture|photo)\b",), needs=("image",)),
        prompt_source="project",
        covers=("image understanding",),
    ),
    Capability(
        name="generate_image",
        description="Generate an image from a text description.",
        inputs=("text",),
        outputs=("image",),
        mode="std",
        preset="image_generation",
        prompt="Please generate an image of {text}.",
        trigger=Trigger(keywords=("draw", "generate an image", "paint", "picture of", "image of")),
        prompt_source="project",
        covers=("image generation",),
        max_new_tokens=_ONE_IMAGE,
    ),
    Capability(
        name="transcribe",
        description="Transcribe speech into text.",
        inputs=("speech",),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt=_ASR,
        trigger=Trigger(keywords=("transcribe", "transcription"), needs=("speech",)),
        covers=("ASR",),
    ),
    Capability(
        name="speak",
        description="Read a text aloud (text to speech).",
        inputs=("text",),
        outputs=("speech",),
        mode="voice",
        preset="tts",
        prompt=_TTS,
        trigger=Trigger(keywords=("read aloud", "read this aloud", "say this")),
        covers=("TTS",),
    ),
    Capability(
        name="speech_generation",
        description="Answer a text prompt with speech (not a transcription of it).",
        inputs=("text",),
        outputs=("speech",),
        mode="voice",
        preset="speech_generation",
        prompt="{text}",
        trigger=Trigger(explicit_only=True),
        prompt_source="project",
        covers=("speech generation",),
    ),
    Capability(
        name="speech_understanding",
        description="Continue or reason about spoken input, answering in text.",
        inputs=("speech",),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt=_SPEECH_UNDERSTANDING,
        trigger=Trigger(explicit_only=True),
        covers=("speech understanding",),
    ),
    Capability(
        name="speech_to_speech",
        description="Answer speech with speech.",
        inputs=("speech",),
        outputs=("speech",),
        mode="voice",
        preset="speech_to_speech",
        prompt="{speech}",
        trigger=Trigger(explicit_only=True),
        covers=("speech to speech",),
    ),
    Capability(
        name="describe_video",
        description="Describe a video from its keyframes.",
        inputs=("video",),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt="{images}\nPlease describe this video in detail.",
        trigger=Trigger(keywords=("describe this video", "describe the video"), needs=("image",)),
        prompt_source="project",
        covers=("video captioning",),
    ),
    Capability(
        name="video_qa",
        description="Answer a question about a video from its keyframes.",
        inputs=("video", "text"),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt="{images}\n{text}",
        trigger=Trigger(patterns=(r"\b(in|of) (this|the) (video|clip)\b",), needs=("image",)),
        prompt_source="project",
        covers=("video understanding",),
    ),
    Capability(
        name="generate_video",
        description="Generate a short video as a sequence of frames from a description.",
        inputs=("text",),
        outputs=("video",),
        mode="std",
        preset="interleaved",
        prompt="Please generate a video of {text}, as a sequence of frames.",
        trigger=Trigger(keywords=("generate a video", "make a video", "animate")),
        prompt_source="project",
        covers=("video generation",),
    ),
    Capability(
        name="interleaved_generation",
        description="Continue a mix of text and images with text and images.",
        inputs=("text", "image"),
        outputs=("text", "image"),
        mode="std",
        preset="interleaved",
        prompt="{images?}{text}",
        trigger=Trigger(explicit_only=True),
        prompt_source="project",
        covers=("interleaved generation",),
    ),
    Capability(
        name="in_context_examples",
        description="Follow image-text examples to answer about a new image.",
        inputs=("text", "image"),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt="{images}{text}",
        trigger=Trigger(explicit_only=True),
        prompt_source="project",
        covers=("multimodal in-context learning",),
    ),
    Capability(
        name="multimodal_reasoning",
        description="Reason step by step about an image and a question, then answer.",
        inputs=("text", "image"),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt="{image}\n{text}\nLet's think step by step.",
        trigger=Trigger(keywords=("step by step",), needs=("image",)),
        prompt_source="project",
        covers=("multimodal chain of thought",),
    ),
    Capability(
        name="chart_qa",
        description="Answer a question about a chart or plot.",
        inputs=("text", "image"),
        outputs=("text",),
        mode="std",
        preset="text",
        prompt="{image}\nThis image is a chart. {text}\nAnswer from the values shown in the chart.",
        trigger=Trigger(keywords=("chart", "plot", "graph"), needs=("image",)),
        prompt_source="project",
        covers=("chart understanding",),
    ),
)


@hookimpl
def mio_agent_capabilities() -> list[Capability]:
    return list(SKILLS)
