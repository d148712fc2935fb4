"""The API in-process (its lifespan, an httpx client on it, its storage) and a user with an
API key, for tests that drive the app without starting a server."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

import httpx


@asynccontextmanager
async def api(settings):
    """The app with its lifespan, an httpx client on it, and its storage."""
    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, app.state.storage


async def new_user(storage) -> dict:
    """A new user with a key: ``{"name", "user_id", "headers"}`` (headers carry the key)."""
    from service import accounts

    name = f"u{uuid.uuid4().hex[:8]}"
    user_id = await accounts.create_user(storage.engine, username=name,
                                         email=f"{name}@example.org", password=None)
    key, _ = await accounts.create_key(storage.engine, username=name, name="t", limit=10_000,
                                       expires_at=None)
    return {"name": name, "user_id": user_id, "headers": {"X-API-Key": key}}
