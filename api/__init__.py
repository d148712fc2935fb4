"""SkyGate's HTTP API (FastAPI): uploads, results and their pictures, under ``/v1``."""
