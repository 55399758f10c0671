"""Helpers shared by the engine tests (imported by name: tests/engine is on sys.path)."""

from __future__ import annotations

from fewstep.app.executor import Executor


class Recorder:
    """Collects emitted events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, event: str, data: dict) -> None:
        self.events.append((event, data))

    def of(self, event: str) -> list[dict]:
        return [d for e, d in self.events if e == event]


def run(executor: Executor, prompt: dict, **kw):
    recorder = Recorder()
    result = executor.execute(prompt, prompt_id=kw.pop("prompt_id", "p1"), emit=recorder, **kw)
    return result, recorder


def n(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}
