"""Loading the model before the first image: a worker (or a scan process) pays the session
load (~0.5 s) when it starts, and only for the methods it runs."""

from __future__ import annotations

import logging

from tests.conftest import migrated, run


def _warm_up(settings, names=None):
    from service import detection
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            await migrated(storage)
            return await detection.warm_up(storage, settings, names)

    return run(go())


def test_the_active_model_is_loaded_before_any_image(embedded):
    from pipeline import clip

    clip._checked_session.cache_clear()
    assert _warm_up(embedded) == ["model"]
    # The encoder and its head: the sessions the first image would otherwise load, each
    # checked against its known answers.
    assert clip._checked_session.cache_info().currsize == 2
    assert _warm_up(embedded, ["prnu", "ela"]) == []


def test_a_broken_model_file_is_logged_not_raised(embedded, monkeypatch, caplog):
    from pipeline.clip import ModelFileError
    from pipeline.methods import model

    def broken(parameters):
        raise ModelFileError("model file /models/x.onnx does not match its SHA-256")

    monkeypatch.setattr(model, "load_model", broken)
    with caplog.at_level(logging.WARNING, logger="skygate.startup"):
        assert _warm_up(embedded) == []
    assert "could not load model ahead of its first image" in caplog.text
    assert "does not match its SHA-256" in caplog.text


def test_a_worker_loads_only_the_methods_of_the_queues_it_consumes(monkeypatch):
    from workers import app, tasks

    calls = []
    monkeypatch.setattr(tasks.process_loop, "run", lambda fn, *args: calls.append(args) or [])
    queues = app.amqp.queues
    for consumed, expected in ((["ingest", "aggregate"], None),
                               (["model"], ["model"]),
                               (["detect"], sorted(set(tasks.DETECT_TASKS) - {"model"}))):
        calls.clear()
        monkeypatch.setattr(queues, "_consume_from", {q: queues[q] for q in consumed})
        tasks._warm_up()
        assert (sorted(calls[0][0]) if calls else None) == expected, consumed


def test_a_database_that_does_not_answer_leaves_the_loading_to_the_first_image(
        embedded, monkeypatch, caplog):
    from service import detection

    async def down(engine):
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(detection.repo, "active_methods", down)
    with caplog.at_level(logging.WARNING, logger="skygate.startup"):
        assert _warm_up(embedded) == []
    assert "methods not loaded ahead (ConnectionRefusedError" in caplog.text
