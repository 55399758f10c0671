"""``fewstep run``'s progress line on a terminal (fewstep/app/terminal.py): node, step and the trainer's loss."""

from __future__ import annotations

import io

from fewstep.app.terminal import TerminalProgress


def _last_line(stream: io.StringIO) -> str:
    return stream.getvalue().split("\r")[-1].strip()


def test_the_line_names_the_node_its_step_and_loss() -> None:
    out = io.StringIO()
    progress = TerminalProgress(out, {"10": "MLCMDistill"})
    progress("executing", {"node": "10"})
    assert _last_line(out) == "node 10 (MLCMDistill)"
    progress("progress", {"node": "10", "value": 12, "max": 12, "loss": 0.0421, "lr": 1e-4, "step": 12,
                          "prompt_id": "p"})
    assert _last_line(out) == "node 10 (MLCMDistill)  step 12/12  loss 0.0421  lr 0.0001"
    progress("execution_success", {})
    assert out.getvalue().endswith("\n")


def test_a_shorter_line_blanks_the_rest_of_the_longer_one() -> None:
    out = io.StringIO()
    progress = TerminalProgress(out, {"3": "SaveImage", "10": "TDMDistill"})
    progress("progress", {"node": "10", "value": 1, "max": 6, "loss": 1.5})
    progress("executing", {"node": "3"})
    first, second = out.getvalue().split("\r")[1:]
    assert second.startswith("node 3 (SaveImage)") and len(second) == len(first)
