"""The live state: one in-memory picture of the plant built from the collectors' newest values.

devices -> collectors -> `LiveState` (here) -> alarms, dashboard, status line, stored analytics.
`state.py` holds the data, `build.py` the pure builder, `service.py` the part that runs.
"""
