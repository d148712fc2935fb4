"""Poison images past prepare: a method or aggregate task whose worker process died on it is
counted per (upload, stage) (:mod:`storage.deliveries`); past ``SKYGATE_MAX_DELIVERIES``
deaths the stage gives up instead of killing one more worker. A method gives up with
``status=error`` and the canvas goes on to a verdict from the others; aggregate (no verdict
without it) fails the upload.

Only a task in a cluster counts: the embedded runner does the whole canvas in one process,
which a poison kills outright."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from schemas.settings import Settings
from storage import deliveries as store
from storage.context import Storage

log = logging.getLogger("skygate.pipeline")


@dataclass(frozen=True)
class Delivery:
    stage: str
    deaths: int  # deliveries of this stage that started and never ended
    redelivered: bool  # the one before this died: no heartbeat from it (see recovery)
    poisoned: bool  # deaths reached the cap: do not run it again
    touched: bool | None = None  # begin's heartbeat (``touch``) found it ours; None: not tried

    @property
    def reason(self) -> str:
        return f"{self.stage} killed its worker {self.deaths} times: poison image"


async def begin(storage: Storage, settings: Settings, upload_id: int, stage: str, *,
                may_count: bool = True, touch: tuple[str, int | None] | None = None
                ) -> Delivery | None:
    """Count this delivery of ``stage`` (None: the upload is gone); ``touch``: also the
    upload's heartbeat, in the same transaction (storage.deliveries.begin)."""
    counted = await store.begin(storage.engine, upload_id, stage, may_count=may_count,
                                touch=touch, cap=settings.max_deliveries)
    if counted is None:
        return None
    deaths, redelivered, touched = counted
    delivery = Delivery(stage=stage, deaths=deaths, redelivered=redelivered,
                        poisoned=deaths >= settings.max_deliveries, touched=touched)
    if delivery.poisoned:
        log.error("%s: giving up", delivery.reason,
                  extra={"upload_id": upload_id, "stage": stage, "deaths": deaths})
    elif redelivered:
        log.warning("%s of upload %s: its worker died on the previous delivery (%d so far)",
                    stage, upload_id, deaths,
                    extra={"upload_id": upload_id, "stage": stage, "deaths": deaths})
    return delivery


async def end(storage: Storage, upload_id: int, stage: str) -> None:
    """This delivery ended (never raises: at worst the next delivery counts one death too
    many, which the cap absorbs)."""
    try:
        await store.end(storage.engine, upload_id, stage)
    except Exception as exc:  # noqa: BLE001 - the database is away; the result still counts
        log.warning("could not record the end of %s of upload %s: %s: %s", stage, upload_id,
                    type(exc).__name__, str(exc)[:200], extra={"upload_id": upload_id})
