"""Both sandbox providers at once: an OpenAI-shaped one and a Together-shaped one, each on its own loopback port."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import Settings
from bot.sandbox.provider import FineTuningSandbox
from bot.sandbox.together import TogetherSandbox


@dataclass
class SandboxProviders:
    openai: FineTuningSandbox
    together: TogetherSandbox

    @classmethod
    def start(cls, pace: float | None) -> SandboxProviders:
        return cls(FineTuningSandbox(pace=pace).start(), TogetherSandbox(pace=pace).start())

    def configure(self, settings: Settings) -> Settings:
        """Settings that point both providers at these stand-ins."""
        return settings.with_sandbox(self.openai.url + "/v1", self.together.url)

    def stop(self) -> None:
        self.openai.stop()
        self.together.stop()
