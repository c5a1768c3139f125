"""Every provider shape's sandbox at once, each stand-in on its own loopback port: what the shell and `--sandbox`
run against. Which stand-ins there are comes from the shapes' declarations (bot/providers/registry.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.config import Settings
from bot.providers import registry
from bot.providers.shape import ProviderShape


@dataclass
class SandboxProviders:
    running: list[tuple[ProviderShape, object]] = field(default_factory=list)

    @classmethod
    def start(cls, pace: float | None) -> SandboxProviders:
        return cls([(shape, shape.sandbox.start(pace)) for shape in registry.SHAPES if shape.sandbox])

    @property
    def labels(self) -> list[str]:
        """How each stand-in is named to a person: "OpenAI's shape", "Together AI's"."""
        return [shape.sandbox.label for shape, _ in self.running]

    @property
    def names(self) -> list[str]:
        """The shapes whose stand-ins run, by name, in the registry's order."""
        return [shape.name for shape, _ in self.running]

    def stand_in(self, name: str):
        """The running stand-in of the shape called `name`."""
        return next(stand_in for shape, stand_in in self.running if shape.name == name)

    def configure(self, settings: Settings) -> Settings:
        """Settings that point every shape's providers at these stand-ins."""
        values: dict[str, str] = {}
        for shape, stand_in in self.running:
            values.update(shape.sandbox.settings(stand_in))
        return settings.with_sandbox(values)

    def stop(self) -> None:
        for _, stand_in in self.running:
            stand_in.stop()
