"""The aiohttp server: probes, the admin API and (later) the application API."""
