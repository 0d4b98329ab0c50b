"""Alarms: what is wrong now (sources), the ISA-18.2 engine, its journal and the service.

Flow: live state -> `sources.conditions` -> `engine.AlarmEngine` -> `journal.AlarmJournal`
-> notifications. Import the modules themselves; this package file stays empty so that the
config models can use `dcim.alarms.types` without loading the engine.
"""
