"""The job queue on its own (no HTTP): one worker thread, jobs in order, cancellation per job."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from lcm_lite.errors import Cancelled, UsageError
from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.request import Request
from lcm_lite.server.jobs import Job, JobQueue

SMALL = {"width": 64, "height": 64, "guidance_scale": 8.0, "steps": 1, "num_images": 1}
SLOW = {"width": 512, "height": 512, "guidance_scale": 8.0, "steps": 8, "num_images": 4}


@pytest.fixture
def jobs(f32_pipe: LCMPipeline) -> Iterator[JobQueue]:
    queue = JobQueue(f32_pipe, "tiny", capacity=2)
    yield queue
    queue.close()


def wait_until_running(job: Job) -> None:
    deadline = time.monotonic() + 30
    while job.state != "running" or job.step == 0:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)


def test_cancelling_the_running_job_leaves_the_next_jobs_alone(jobs: JobQueue) -> None:
    slow = jobs.submit(Request(prompt="slow", seed=1, **SLOW))
    wait_until_running(slow)
    jobs.cancel_running()
    assert isinstance(slow.outcome.exception(timeout=60), Cancelled)
    assert slow.state == "failed" and isinstance(slow.error, Cancelled)
    for seed in (2, 3):
        after = jobs.submit(Request(prompt="after the cancelled one", seed=seed, **SMALL))
        assert len(after.outcome.result(timeout=60)) == 1
        assert (after.state, after.step, len(after.images)) == ("done", 1, 1), after.error
    assert jobs.outcomes == {"cancelled": 1, "done": 2}
    assert jobs.submitted == 3


@pytest.mark.slow
def test_a_job_cancelled_while_it_waits_fails_at_once_and_never_runs(jobs: JobQueue) -> None:
    slow = jobs.submit(Request(prompt="slow", seed=1, **SLOW))
    waiting = jobs.submit(Request(prompt="waiting", seed=2, **SMALL))
    finished: list[str] = []
    waiting.outcome.add_done_callback(lambda _: finished.append(waiting.state))
    waiting.cancel()
    assert finished == ["failed"] and isinstance(waiting.error, Cancelled)
    assert waiting.outcome.cancelled()
    assert len(slow.outcome.result(timeout=60)) == 4 and slow.state == "done"
    assert waiting.step == 0


def png_bytes(width: int, height: int, black: bool = False) -> bytes:
    """A PNG of noise, or of black pixels (small at any size)."""
    picture = Image.new("1", (width, height)) if black else Image.effect_noise((width, height), 60)
    buffer = io.BytesIO()
    picture.convert("1" if black else "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_failed_job_keeps_its_error_without_a_traceback_nor_the_picture(
    jobs: JobQueue,
) -> None:
    truncated = png_bytes(80, 72)[:400]  # a header that passes, pixels that do not
    failing = jobs.submit(Request(prompt="x", seed=1, image=truncated, **SMALL))
    error = failing.outcome.exception(timeout=60)
    assert isinstance(error, UsageError) and "truncated or corrupt" in str(error)
    assert failing.state == "failed" and failing.error is error and failing.images == []
    assert (error.__traceback__, error.__context__, error.__cause__) == (None, None, None)
    assert failing.request.image is None and failing.has_picture


def test_a_done_job_keeps_its_images_not_its_picture(jobs: JobQueue) -> None:
    done = jobs.submit(Request(prompt="x", seed=1, image=png_bytes(80, 72), strength=0.5, steps=2))
    assert len(done.outcome.result(timeout=60)) == 1
    assert done.request.image is None and done.has_picture
    assert (done.request.width, done.request.height, done.request.strength) == (80, 72, 0.5)


@pytest.mark.parametrize(
    ("picture", "size", "message"),
    [
        (b"not a picture", {}, "not a PNG, JPEG or WebP picture"),
        (
            png_bytes(4100, 4100, black=True),
            {"width": 64, "height": 64},
            "more than the 16 megapixels",
        ),
        (png_bytes(2056, 64), {}, "makes a 2056x64 image, larger than 2048 pixels a side"),
        (png_bytes(72, 8), {}, "makes a 72x8 image, smaller than 64 pixels a side"),
    ],
)
def test_a_picture_is_refused_from_its_header_at_submission(
    jobs: JobQueue, picture: bytes, size: dict[str, int], message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        jobs.submit(Request(prompt="x", seed=1, image=picture, steps=1, **size))
    assert jobs.waiting == 0 and jobs.running is None and sum(jobs.outcomes.values()) == 0


def test_a_negative_prompt_a_latent_consistency_model_cannot_take_is_refused_at_submission(
    jobs: JobQueue,
) -> None:
    with pytest.raises(UsageError, match="takes no negative prompt"):
        jobs.submit(Request(prompt="x", seed=1, negative_prompt="blurry", **SMALL))
    assert jobs.waiting == 0 and jobs.running is None and sum(jobs.outcomes.values()) == 0
