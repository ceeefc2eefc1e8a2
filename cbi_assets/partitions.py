"""Partition definitions declared once: each market's horizons, and the named regimes."""

import dagster as dg

from cbi_assets.catalogue import ASSETS

# One partition per valid asset x horizon: each market's own horizons (no MES 1w, no ZL 1min).
HORIZON_PARTITIONS = {a: dg.StaticPartitionsDefinition([h.name for h in ASSETS[a.upper()].horizons]) for a in ("zl", "mes")}

# Regimes as a partition dimension: seeded from the calendar, extended when a regime is detected
# or added to the calendar by configuration, with no code change.
REGIME_PARTITIONS = dg.DynamicPartitionsDefinition(name="regime")
