"""Storage: one async interface, three backends (embedded SQLite, InfluxDB 1.x, InfluxDB 2.x/3.x)."""
