"""The ``seed`` input of trainer and quantizer nodes: fixed in the editor by default."""

from __future__ import annotations

from fewstep.app.api import Input, Int

SEED_TOOLTIP = ("part of the run's identity: the same seed resumes the same run folder "
                "(set the control after it to randomize to start a new run on every Run)")


def fixed_seed(name: str = "seed", default: int = 0, *, max: int = 2**63 - 1,
               tooltip: str = SEED_TOOLTIP) -> Input:
    """An INT seed whose editor control starts at "fixed".

    Editor 1.58 gives every INT input named ``seed``/``noise_seed`` a control widget, and starts it at
    "randomize" unless the input's options carry ``control_after_generate`` as a mode string (its
    ``useIntWidget``: ``typeof t.control_after_generate == 'string' ? t.control_after_generate :
    'randomize'``). A trainer's seed is hashed into its run folder, so a randomized seed made every Run
    start a new run instead of resuming (issue: MLCM seed 0 became 6830441948891 after one Run).
    """
    return Int(name, default, min=0, max=max, tooltip=tooltip, extra={"control_after_generate": "fixed"})
