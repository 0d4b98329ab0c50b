"""Every configuration model of dcim in one place (pydantic, `extra="forbid"`).

`site` is the site file as a whole; it composes `storage`, `alarms` and `notifications`.
Nothing here imports the running parts (no aiohttp, no engines): loading a config is cheap.
"""
