"""The report's webhooks per INSERT come from the runner's own log: one "webhooks stored" line per
committed batch (runner.intake), counted for the measured phase's event ids only, as the runner
actually writes them."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

from bench.ingest import insert_batches
from runner import intake
from runner.logs import JsonFormatter


def _runner_log(batches: list[list[str]]) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("storeops")  # the intake's lines and the webhooks' both
    logger.addHandler(handler)
    old_level, logger.level = logger.level, logging.INFO
    try:
        for ids in batches:
            items = [intake._Item(None, i, "payment.captured", b"{}", "req", None) for i in ids]
            intake.IngestBatcher._log(SimpleNamespace(provider="razorpay"), [(item, "stored") for item in items])
        logging.getLogger("storeops.webhooks").warning("webhook rejected", extra={"event_id": "intake_0_9"})
    finally:
        logger.removeHandler(handler)
        logger.level = old_level
    return out.getvalue()


def test_only_the_phases_batches_are_counted():
    text = _runner_log([["intakew_1_1", "intakew_1_2"],            # the warm-up
                        ["intake_1_1", "intake_2_1", "intake_1_2"],  # the measured phase: 3 batches
                        ["intake_1_3"], ["intake_2_2", "intake_2_3"],
                        ["prof_1_1"]])                               # the profile run after it
    assert text.count("webhooks stored") == 5 and "webhook rejected" in text  # the log really has them all
    assert insert_batches(text, "intake") == 3
    assert insert_batches(text, "intakew") == 1 and insert_batches(text, "prof") == 1
    assert insert_batches("", "intake") == 0
