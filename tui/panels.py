"""The live side panels: session state and microphone, latency of the last turns by stage, model, plugins."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

__all__ = ["LatencyPanel", "MicPanel", "ModelPanel", "PluginsPanel", "level_bar"]

_STATE_STYLE = {
    "listening": "green",
    "hearing": "bold green",
    "thinking": "yellow",
    "speaking": "cyan",
    "muted": "red",
    "closed": "dim",
}


def level_bar(dbfs: float, width: int = 10) -> str:
    """A level meter: -60 dBFS (or less) is empty, 0 dBFS full."""
    filled = max(0, min(width, round((dbfs + 60) / 60 * width)))
    return "█" * filled + "·" * (width - filled)


class MicPanel(Static):
    """Session state, input mode (hands-free or push-to-talk), microphone level and the voice detector."""

    DEFAULT_CLASSES = "panel"

    def __init__(self, *, id: str | None = None) -> None:
        self.state = "starting"
        self.mode = "hands-free"
        self.microphone = False
        self.talking = False
        self.dbfs = -120.0
        self.speech = False
        super().__init__(self._content(), id=id)

    def _content(self) -> Text:
        out = Text("state: ", style="bold")
        out.append(self.state, style=_STATE_STYLE.get(self.state, ""))
        if not self.microphone:
            out.append("\nmic:   none (type)", style="dim")
            return out
        mode = self.mode + (" ● talking" if self.talking else "")
        out.append(f"\nmode:  {mode}")
        out.append(f"\nmic:   {level_bar(self.dbfs)} {max(self.dbfs, -99):3.0f} dB")
        out.append("\nvad:   ")
        out.append("speech" if self.speech else "silence", style="bold green" if self.speech else "dim")
        return out

    def show(self) -> None:
        self.update(self._content())


class LatencyPanel(Static):
    """Latency of the last few turns, by stage (the session's `metrics` events)."""

    DEFAULT_CLASSES = "panel"
    # vad: end of speech detected after; tok, aud: first token and first audio after the end of the user's
    # turn; gen: the agent's whole turn
    COLUMNS = (("vad", "vad"), ("first_token", "tok"), ("first_audio", "aud"), ("turn", "gen"))
    KEEP = 4

    def __init__(self, *, id: str | None = None) -> None:
        self.turns: dict[int, dict[str, float]] = {}
        super().__init__(self._content(), id=id)

    def add(self, turn: int, stage: str, seconds: float) -> None:
        self.turns.setdefault(turn, {})[stage] = seconds
        for old in sorted(self.turns)[: -self.KEEP]:
            del self.turns[old]
        self.update(self._content())

    def _content(self) -> Table | Text:
        if not self.turns:
            return Text("latency: –", style="dim")
        table = Table("turn", *(label for _, label in self.COLUMNS), box=None, padding=(0, 1, 0, 0))
        table.title = "latency (ms)"
        for turn in sorted(self.turns):
            stages = self.turns[turn]
            table.add_row(
                str(turn),
                *(f"{stages[key] * 1000:.0f}" if key in stages else "–" for key, _ in self.COLUMNS),
            )
        barge_ins = [stages["barge_in"] for stages in self.turns.values() if "barge_in" in stages]
        if barge_ins:
            table.caption = f"barge-in {barge_ins[-1] * 1000:.0f} ms"
        return table


class ModelPanel(Static):
    """The loaded model and its device (or the server attached to)."""

    DEFAULT_CLASSES = "panel"

    def set_description(self, description: str) -> None:
        self.update(Text.assemble(("model: ", "bold"), description))


class PluginsPanel(Static):
    """Plugins, and how many capabilities (a slash command each) they give."""

    DEFAULT_CLASSES = "panel"

    def set_plugins(self, plugins: Sequence[str], capabilities: int) -> None:
        out = Text("plugins: ", style="bold")
        out.append(", ".join(plugins) if plugins else "(the server's)")
        out.append(f"\n{capabilities} capabilities: / lists them", style="dim")
        self.update(out)
