"""Every FLOAT input's default reads exactly in the editor and survives its rounding.

The editor (ComfyUI frontend 1.58.1, ``useFloatWidget``) shows a FLOAT widget with
``max(0, -floor(log10(step)))`` decimals (step 0.5 when none is given) and, on every edit, snaps the
value to ``round`` (the node's own, else 10^-decimals) and writes it with that many decimals. Our
extension ``frontend/float_display.js`` widens the decimals to what the default needs, up to
``MAX_DECIMALS``, and keeps the automatic rounding in step. A default that still reads or snaps to
another number (1e-4 at step 0.01 read 0) fails here, naming node and input.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from fewstep.app.registry import load_registry

EXTENSION = Path(__file__).resolve().parents[2] / "frontend" / "float_display.js"
MAX_DECIMALS = int(re.search(r"export const MAX_DECIMALS = (\d+);", EXTENSION.read_text()).group(1))


def fixed(value: float, decimals: int) -> float:
    """``Number(value.toFixed(decimals))`` of the editor."""
    return float(f"{value:.{decimals}f}")


def step_decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step)))


def decimals_needed(value: float) -> int | None:
    """``decimalsNeeded`` of frontend/float_display.js."""
    return next((d for d in range(MAX_DECIMALS + 1) if fixed(value, d) == value), None)


def shown_decimals(options: dict[str, object]) -> int:
    """What the editor with our extension shows for this FLOAT input."""
    base = step_decimals(float(options.get("step", 0.5)))
    needed = decimals_needed(float(options["default"]))
    return base if needed is None else max(base, needed)


def float_problem(options: dict[str, object]) -> str | None:
    """Why the editor would show or keep another value than the default; None when it does not."""
    default = float(options["default"])
    decimals = shown_decimals(options)
    shown = fixed(default, decimals)
    if shown != default:
        return f"reads {shown:.{decimals}f}"
    own_round = options.get("round")
    rounding = float(own_round) if own_round else (10.0 ** -decimals if decimals else None)
    if rounding:
        snapped = fixed(round(default / rounding) * rounding, decimals)
        if snapped != default:
            return f"an edit snaps it to {snapped} (round {rounding})"
    return None


def float_inputs() -> list[tuple[str, str, dict[str, object]]]:
    registry = load_registry([], entry_points=False, builtin=True)
    found = []
    for node_type, info in sorted(registry.object_info().items()):
        for group in ("required", "optional"):
            for name, spec in (info["input"].get(group) or {}).items():
                if isinstance(spec, list) and spec and spec[0] == "FLOAT" and len(spec) > 1:
                    if spec[1].get("default") is not None:
                        found.append((node_type, name, spec[1]))
    return found


def test_every_float_default_reads_and_rounds_to_itself() -> None:
    inputs = float_inputs()
    assert len(inputs) > 100, "expected the built-in packs' FLOAT inputs"
    names = {(node, name) for node, name, _ in inputs}
    assert {("MLCMDistill", "learning_rate"), ("KarrasScheduler", "sigma_min")} <= names
    problems = [f"{node}.{name} = {opts['default']!r} (step {opts.get('step')}, round {opts.get('round')}): {why}"
                for node, name, opts in inputs if (why := float_problem(opts)) is not None]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("options", "problem"), [
    ({"default": 0.0001, "step": 0.01}, None),                        # widened to 4 decimals
    ({"default": 0.0291675, "step": 0.01, "round": False}, None),     # KarrasScheduler's sigma_min
    ({"default": 1e-10, "step": 0.01}, "reads 0.00"),                 # beyond MAX_DECIMALS
    ({"default": 0.0001, "step": 1e-6, "round": 0.001}, "an edit snaps it to 0.0 (round 0.001)"),
    ({"default": 0.5, "step": 1}, None),                              # step 1: 1 decimal from the default
    ({"default": 5.0, "step": 0.1, "round": 0.5}, None),
])
def test_the_rule_catches_what_the_editor_would_change(options: dict[str, object], problem: str | None) -> None:
    assert float_problem(options) == problem
