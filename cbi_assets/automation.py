"""When an asset builds itself: the evening cycle, declared on the assets it runs.

The ingest schedules (schedules/ingest.py) take in the day's raw partitions after the CME close.
Every asset of the `prepare` stage, and the regime state and today's forecast and its upload, carry
`EVENING`: Dagster's automation sensor (schedules/automation.py) materializes each as soon as what it
reads has been updated and nothing it reads is missing or still running. The models are not in the
cycle: they retrain when the regime shifts or validation fails (schedules/sensors.py).
"""

import dagster as dg

EVENING = dg.AutomationCondition.eager()
