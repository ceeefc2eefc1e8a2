"""Partition definitions, declared once: each market's horizons and the named regimes (the raw layer's years
are in cbi_assets/raw/partitions.py)."""

import dagster as dg

from cbi_assets.catalogue import MARKETS, Market

# One partition per valid market x horizon: each market's own horizons (no MES 1w, no ZL 1min).
HORIZON_PARTITIONS: dict[str, dg.StaticPartitionsDefinition] = {
    m.key: dg.StaticPartitionsDefinition([h.name for h in m.horizons]) for m in MARKETS.values()
}


def horizon_partitions(market: Market) -> dg.StaticPartitionsDefinition:
    return HORIZON_PARTITIONS[market.key]


# Regimes as a partition dimension: seeded from the calendar, extended when a regime is detected
# or added to the calendar by configuration, with no code change.
REGIME_PARTITIONS = dg.DynamicPartitionsDefinition(name="regime")
