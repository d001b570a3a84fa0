"""What every session of one process shares: the loaded model, the codecs and the plugins."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mio_agent.capability import Capability, CapabilityMode
from mio_agent.config import Config
from mio_agent.engine import ConversationEngine
from mio_agent.plugin import PluginManager

if TYPE_CHECKING:
    from mio_agent.codecs.image import ImageCodec
    from mio_agent.codecs.speech import SpeechCodec
    from mio_agent.model.loading import LoadedModel

__all__ = ["EMBEDDED_NOTE", "SharedResources"]

EMBEDDED_NOTE = (
    "note: running the embedded tiny model (random weights, built from a seed): its replies are noise. "
    "Set model.path in a config to a MIO-7B-Instruct folder for real replies."
)


def _codec_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class SharedResources:
    """One model, one speech codec, one plugin manager for many sessions.

    The model's weights are read-only during inference, so each session's ConversationEngine
    (own history, own KV cache, own worker thread) uses them at once. The image codec, which
    loads the large SEED-2 and diffusion weights, is loaded on first use.
    """

    config: Config
    lm: LoadedModel
    speech: SpeechCodec
    plugins: PluginManager
    embedded: bool = False
    _image: ImageCodec | None = field(default=None, repr=False)
    _image_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(
        cls, config: Config, *, quiet: bool = True, plugins: PluginManager | None = None
    ) -> SharedResources:
        """Load the configured model (the embedded one by default), speech codec and plugins.

        Raises ModelFilesError / CodecError naming a missing or broken file, PluginError naming
        a broken plugin. `quiet` hides the loading progress and the embedded-model note.
        """
        from mio_agent.codecs.folders import speech_tokenizer_dir
        from mio_agent.codecs.speech import SpeechCodec
        from mio_agent.model.embedded import configured_model_dir
        from mio_agent.model.fast_path import prepare_for_config
        from mio_agent.model.loading import load_model

        path, embedded = configured_model_dir(config.model)
        if embedded and not quiet:
            print(EMBEDDED_NOTE, file=sys.stderr)
        lm = load_model(
            path, device=config.model.device, dtype=config.model.dtype, progress=not quiet and not embedded
        )
        # compile and capture the GPU decode step now, never on a user's first turn
        prepare_for_config(lm, config.engine)
        speech = SpeechCodec.from_pretrained(
            speech_tokenizer_dir(config), device=_codec_device(config.codecs.device)
        )
        manager = plugins if plugins is not None else PluginManager.from_config(config)
        manager.check_pending()
        return cls(config=config, lm=lm, speech=speech, plugins=manager, embedded=embedded)

    def engine(self, mode: CapabilityMode | None = None, *, seed: int | None = None) -> ConversationEngine:
        """A new conversation on the shared model, set up from the config's engine section."""
        e = self.config.engine
        return ConversationEngine.from_config(
            self.lm,
            e,
            mode=mode or e.mode,
            preset=e.preset if (mode or e.mode) == e.mode else None,
            seed=seed,
        )

    def check_room(self) -> None:
        """Raise BatchFull when a new conversation would find no row of the batched decode free, or
        BatchTooSlow when the decode already runs below `engine.min_decode_tok_s` per conversation."""
        fast = self.lm.fast
        if fast is not None and fast.scheduler is not None:
            fast.scheduler.check_room(self.config.engine.min_decode_tok_s)

    def image_codec(self) -> ImageCodec:
        """The SEED-2 image codec with its diffusion decoder (loaded on the first call, thread-safe)."""
        with self._image_lock:
            if self._image is None:
                from mio_agent.codecs.folders import diffusion_dir, image_tokenizer_dir
                from mio_agent.codecs.image import ImageCodec

                self._image = ImageCodec.from_pretrained(
                    image_tokenizer_dir(self.config),
                    diffusion_dir=diffusion_dir(self.config),
                    device=_codec_device(self.config.codecs.device),
                )
            return self._image

    def capabilities(self) -> tuple[Capability, ...]:
        """Every capability the loaded plugins contribute."""
        return self.plugins.capabilities()
