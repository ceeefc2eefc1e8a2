"""When an asset builds itself: the evening cycle, declared on the assets it runs.

The ingest schedules (schedules/ingest.py) take in the day's raw partitions after the CME close.
Every asset of the `prepare` stage, and the regime state and today's forecast and its upload, carry
`EVENING`: Dagster's automation sensor (schedules/automation.py) materializes each as soon as what it
reads has been updated and nothing it reads is missing or still running. The models are not in the
cycle: they retrain when the regime shifts or validation fails (schedules/sensors.py).
"""

import dagster as dg

# Dagster's `eager()` without its check that no dependency is missing: a raw dataset's years before its
# history begins (or before a user's own files begin) are never materialized, and would hold back every
# asset downstream for good. A dependency truly missing fails its reader with a message that names it.
EVENING = (
    dg.AutomationCondition.in_latest_time_window()
    & dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("evening")
