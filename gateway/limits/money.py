"""Money as the limits count it: whole micro-dollars (never floats), from the models' prices.
Pure.

A price per million tokens in dollars is, per token, that many micro-dollars: ``tokens *
input_per_mtok`` is the cost in micro-dollars. Costs are rounded up to a whole micro-dollar,
so a reservation is never less than what the same usage settles to.
"""

from __future__ import annotations

import math

from gateway.config.schema import Pricing

MICROS = 1_000_000
FREE = Pricing()


def micros(usd: float | None) -> int | None:
    """Dollars (a config or API value) as whole micro-dollars."""
    return None if usd is None else round(usd * MICROS)


def usd(amount: int | None) -> float | None:
    """Micro-dollars as dollars, for answers."""
    return None if amount is None else amount / MICROS


def cost(
    pricing: Pricing,
    prompt: int,
    completion: int,
    requests: int = 1,
    images: int = 0,
    audio_seconds: float = 0.0,
) -> int:
    """What a request costs at ``pricing``, in whole micro-dollars (rounded up)."""
    if not (  # most models: nothing to price (read field by field: no dataclass __eq__)
        pricing.input_per_mtok
        or pricing.output_per_mtok
        or pricing.per_request
        or pricing.per_image
        or pricing.per_audio_second
    ):
        return 0
    total = (
        prompt * pricing.input_per_mtok
        + completion * pricing.output_per_mtok
        + (requests * pricing.per_request + images * pricing.per_image) * MICROS
        + audio_seconds * pricing.per_audio_second * MICROS
    )
    return math.ceil(total - 1e-9) if total > 0 else 0
