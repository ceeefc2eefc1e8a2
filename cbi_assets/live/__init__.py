"""The live MES service: Databento's live feed (or a replay) to bronze, and a forecast of every intraday horizon
at every closed bar, computed with the batch layers' own functions (`cbi live`, README "Live MES")."""
