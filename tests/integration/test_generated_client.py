"""A Python client generated from ``/openapi.json`` by openapi-python-client (what an
integrating service would do) runs register webhook → upload with ``?wait`` → signed
``upload.done`` on a loopback receiver → result, against the API in process on the embedded
default. The generator's names come from the stable operation ids."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import subprocess
import sys

import httpx
import pytest

from testkit.images import SD_PARAMETERS, encode, smooth_scene
from tests.conftest import module_settings, run, wait_for
from tests.inprocess import new_user
from tests.webhook_receiver import receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("openapi_python_client")
standardwebhooks = pytest.importorskip("standardwebhooks")

CONFIG = """post_hooks: []
project_name_override: skygate_generated
package_name_override: skygate_generated
content_type_overrides:
  image/png: application/octet-stream
"""


@pytest.fixture(scope="module", params=["embedded"])
def settings(request, tmp_path_factory):
    for s in module_settings(request, tmp_path_factory, "genclient", mongo=False):
        yield s.model_copy(update={"webhook_allow_http": True, "webhook_allow_private": True})


def generate(spec: dict, folder) -> None:
    (folder / "spec.json").write_text(json.dumps(spec))
    (folder / "config.yaml").write_text(CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path",
         str(folder / "spec.json"), "--output-path", str(folder / "skygate_generated"),
         "--meta", "none", "--config", str(folder / "config.yaml")],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout, done.stdout


def test_generated_client_round_trip(settings, tmp_path, monkeypatch):
    from api.app import create_app

    app = create_app(settings)
    generate(app.openapi(), tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    gen = importlib.import_module("skygate_generated")
    from skygate_generated.api.uploads import results_get, uploads_create, uploads_list
    from skygate_generated.api.webhooks import webhooks_create, webhooks_deliveries_list
    from skygate_generated.models import ResultOut, UploadsCreateBody, WebhookIn
    from skygate_generated.types import File

    async def go():
        with receiver() as rx:
            async with app.router.lifespan_context(app):
                user = await new_user(app.state.storage)
                client = gen.AuthenticatedClient(
                    base_url="http://test", token=user["headers"]["X-API-Key"], prefix="",
                    auth_header_name="X-API-Key", raise_on_unexpected_status=True,
                    httpx_args={"transport": httpx.ASGITransport(app=app)},
                    timeout=httpx.Timeout(60))
                async with client:
                    hook = await webhooks_create.asyncio(
                        client=client, body=WebhookIn(url=f"{rx.base}/ok"))
                    assert hook.secret.startswith("whsec_")
                    png = encode(smooth_scene(seed=71, rows=96, cols=96),
                                 text={"parameters": SD_PARAMETERS})
                    body = UploadsCreateBody(file=[File(payload=io.BytesIO(png),
                                                        file_name="r.png",
                                                        mime_type="image/png")],
                                             client_reference=["gen-1"])
                    answer = await uploads_create.asyncio_detailed(client=client, body=body,
                                                                   wait=10,
                                                                   idempotency_key="gen-once")
                    assert answer.status_code == 200, answer.content
                    (entry,) = answer.parsed.uploads
                    assert entry.status.value == "done" and entry.client_reference == "gen-1"

                    result = await results_get.asyncio(upload_id=entry.upload_id,
                                                       client=client, wait=5)
                    assert isinstance(result, ResultOut)
                    assert result.ai_probability == entry.ai_probability
                    assert result.verdict.value == "ai"
                    listed = await uploads_list.asyncio(client=client,
                                                        client_reference="gen-1")
                    assert [u.upload_id for u in listed.items] == [entry.upload_id]

                    # In a thread: the API's deliverer runs on this event loop meanwhile.
                    await asyncio.to_thread(wait_for, lambda: rx.on("/ok"), 30,
                                            "upload.done delivered")
                    (req,) = rx.on("/ok")
                    event = standardwebhooks.Webhook(hook.secret).verify(req["body"],
                                                                        req["headers"])
                    assert event["data"]["upload_id"] == entry.upload_id
                    assert event["data"]["client_reference"] == "gen-1"
                    assert event["data"]["ai_probability"] == result.ai_probability
                    log = await webhooks_deliveries_list.asyncio(webhook_id=hook.webhook_id,
                                                                 client=client)
                    assert [d.status.value for d in log.items] in (["delivered"], ["pending"])

    run(go())
