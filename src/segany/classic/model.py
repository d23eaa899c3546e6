"""The weight-free engine as a model object: its settings, and the predictor / generator it makes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CLASSIC_NAME = "classic"


@dataclass(frozen=True)
class ClassicConfig:
    """Settings of the classic engine (defaults tuned with ``segany eval`` on GrabCut/Berkeley/DAVIS).

    ``max_side``: longest side of the working resolution (images are shrunk to it, masks come back
    at full size). ``iterations``: GrabCut rounds per prompt. ``click_radius``: radius in working
    pixels of the hard constraint around each click. ``seed_radius``: radius of the first probable
    foreground around a lone click, as a fraction of the working image's longest side.
    ``click_reach``: with a previous mask, each click's hard constraint grows to this fraction of
    its distance to that mask's boundary (0 turns it off).
    """

    max_side: int = 512
    iterations: int = 3
    click_radius: int = 3
    seed_radius: float = 0.05
    click_reach: float = 0.8
    name: str = field(default=CLASSIC_NAME)


class ClassicModel:
    """What ``segany.load_model("classic")`` returns: no weights, only settings.

    ``segany.Predictor(model)`` and ``segany.MaskGenerator(model)`` give this engine's predictor and
    generator (the "classic" family of :mod:`segany.families`), so code written for SAM runs unchanged.
    """

    image_format = "RGB"

    def __init__(self, config: ClassicConfig | None = None) -> None:
        self.config = config or ClassicConfig()

    @property
    def name(self) -> str:
        return self.config.name

    def eval(self) -> ClassicModel:
        """Nothing to switch: there are no layers (kept so code written for torch models runs)."""
        return self

    def to(self, *_args: Any, **_kwargs: Any) -> ClassicModel:
        """The classic engine runs on the CPU whatever device is asked for."""
        return self

    def __repr__(self) -> str:
        return f"ClassicModel({self.config})"
