"""The settings of the synthetic rain model (:mod:`eqreg_hf.data.synthetic`), as one object.

Each field is a number, or a ``(low, high)`` range drawn per image (``density``, ``angle_range``) or
per streak layer (``length``, ``width``); see :func:`eqreg_hf.data.synthetic.rain_streaks` for the model.
The fields are flat and JSON-able: ``dataclasses.asdict(settings)`` writes them and
``RainSettings(**fields)`` reads them back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["BLENDS", "DEFAULT_RAIN", "RainSettings", "check_blend"]

BLENDS: tuple[str, ...] = ("add", "screen")


def check_blend(blend: str) -> None:
    """Raise a ValueError naming the choices unless ``blend`` is one of ``BLENDS``."""
    if blend not in BLENDS:
        raise ValueError(f"Unknown blend={blend!r}. Choose between {list(BLENDS)}.")


@dataclass(frozen=True)
class RainSettings:
    """How :func:`eqreg_hf.data.make_synthetic_rain` draws its rain; the defaults are the built-in
    benchmark's.

    Args:
        density: fraction of pixels that start a streak, or a ``(low, high)`` range per image
            (default ``(0.002, 0.006)``).
        length: streak length in pixels, or a range drawn per layer (default ``(8.0, 24.0)``).
        angle_range: ``(low, high)`` degrees from vertical for each image's dominant angle
            (default ``(-30.0, 30.0)``; ``(-90.0, 90.0)`` makes the rain C4-symmetric in distribution).
        angle_jitter: each layer's angle deviates from the dominant one by at most this (degrees, default 5).
        width: streak thickness (FWHM, pixels), or a range drawn per layer (default ``(0.8, 1.6)``).
        intensity: the rain's brightness ``a`` in ``O = clip(B + a S, 0, 1)``, or a range per image
            (default ``(0.4, 0.8)``).
        num_layers: streak layers with their own length, angle and width (default 3).
        blend: ``"add"`` (``clip(B + a S)``) or ``"screen"`` (``1 - (1 - B)(1 - a S)``), default ``"add"``.

    Example:
        >>> RainSettings(angle_range=(-90.0, 90.0)).angle_range
        (-90.0, 90.0)
        >>> RainSettings(blend="multiply")
        Traceback (most recent call last):
        ...
        ValueError: Unknown blend='multiply'. Choose between ['add', 'screen'].
    """

    density: float | tuple[float, float] = (0.002, 0.006)
    length: float | tuple[float, float] = (8.0, 24.0)
    angle_range: tuple[float, float] = (-30.0, 30.0)
    angle_jitter: float = 5.0
    width: float | tuple[float, float] = (0.8, 1.6)
    intensity: float | tuple[float, float] = (0.4, 0.8)
    num_layers: int = 3
    blend: str = "add"

    def __post_init__(self):
        # ranges read back from JSON are lists: store them as tuples, so a round trip gives an equal object
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        check_blend(self.blend)
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}.")

    def streak_kwargs(self) -> dict:
        """The fields that shape the streak layer: the keyword arguments of ``rain_streaks``."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("intensity", "blend")}


# The defaults as a plain dict, for reading and for ``rain_streaks`` / ``add_rain``'s keyword defaults.
DEFAULT_RAIN: dict = dataclasses.asdict(RainSettings())
