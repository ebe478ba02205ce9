"""Generation jobs for the server: one worker thread owns the pipeline and runs the jobs one at a
time, in order, from a bounded queue; a full queue is refused at once instead of piling up.

A job goes ``queued -> running -> done | failed``; its ``step`` counts the LCM steps done, its
``outcome`` (a ``concurrent.futures.Future``) holds its images or its error. Cancelling a job stops
it alone: a queued one fails at once, a running one after its current step.

A starting picture is checked from its header when the job is submitted (nothing decoded: its
pixel count, and the size of the image it makes), decoded only in the worker, and its bytes are
dropped once the job is over: a kept job holds its PNGs or its error, never the picture.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import queue
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from lcm_lite.errors import Cancelled, LcmLiteError
from lcm_lite.fields import picture_fields, specs
from lcm_lite.images.png import png_info
from lcm_lite.images.preprocess import check_before_decoding, check_headers
from lcm_lite.request import MAX_SIZE, Request

if TYPE_CHECKING:
    from PIL import Image

    from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
    from lcm_lite.pipeline.results import StepInfo

log = logging.getLogger("lcm_lite.server")

MAX_SERVED_PICTURE_PIXELS = 4096 * 4096  # a starting picture's, checked before decoding
MIN_SERVED_SIDE = int(specs(Request)["width"].served.low)  # the smallest image served: 64


class QueueFull(Exception):
    """Every queue slot is taken; ``retry_after`` guesses, in whole seconds, when one frees."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the generation queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """A request and what became of it; written by the worker, read by the HTTP threads."""

    request: Request  # once planned, resolved: the size, the steps and the seed used
    previews: bool = False  # keep the latest step's preview (needs a tiny VAE)
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    step: int = 0
    seconds: float = 0.0
    started: float = 0.0  # when it began to run (time.time()); 0 while it waits
    timings: dict[str, float] = field(default_factory=dict)
    preview: bytes | None = None  # PNG of the first image's latest preview, while it runs
    outcome: Future[list[bytes]] = field(default_factory=Future, repr=False)
    cancelled: bool = False  # asked to stop: a running job stops after its current step
    # told after each step, in the worker thread: (step, steps, the preview if kept)
    on_step: Callable[[int, int, bytes | None], None] | None = field(default=None, repr=False)
    # the picture fields given (image, mask_image): their bytes go once the job is over
    given_pictures: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.given_pictures = frozenset(
            name for name in picture_fields(Request) if getattr(self.request, name) is not None
        )

    @property
    def has_picture(self) -> bool:
        """Image to image (or inpainting): a starting picture was given."""
        return "image" in self.given_pictures

    @property
    def state(self) -> str:
        """``queued``, ``running``, ``done`` or ``failed`` (a cancelled job failed)."""
        if not self.outcome.done():
            return "running" if self.outcome.running() else "queued"
        return "failed" if self.error is not None else "done"

    @property
    def images(self) -> list[bytes]:
        """The PNGs of a done job; none before, nor after a failure."""
        return self.outcome.result() if self.state == "done" else []

    @property
    def error(self) -> BaseException | None:
        """Why a failed job failed (without a traceback); ``None`` otherwise."""
        if self.outcome.cancelled():
            return Cancelled("the job was cancelled")
        return self.outcome.exception() if self.outcome.done() else None

    def cancel(self) -> None:
        """Stop this job: a queued job fails now, a running one after its current step."""
        self.cancelled = True
        if self.outcome.cancel():  # takes effect only while the job waits: it never runs
            self.forget_picture()

    def fail(self, error: BaseException) -> None:
        """Finish with ``error``, kept without its traceback and chained errors (their frames
        hold the pipeline's arrays and the decoded picture), nor the picture's bytes."""
        error.__traceback__ = error.__context__ = error.__cause__ = None
        self.forget_picture()
        self.outcome.set_exception(error)

    def succeed(self, images: list[bytes], seconds: float, timings: dict[str, float]) -> None:
        """Finish with ``images``; the picture's bytes are dropped."""
        self.seconds, self.timings = seconds, timings
        self.forget_picture()
        self.outcome.set_result(images)

    def forget_picture(self) -> None:
        """Drop the pictures' bytes: the starting picture, the mask, the control pictures
        (``given_pictures`` still says which there were)."""
        if self.given_pictures:
            self.request = replace(self.request, **dict.fromkeys(self.given_pictures))


class JobQueue:
    """At most ``capacity`` jobs wait while one runs; finished jobs are kept (the newest
    ``keep_finished``) so that their results can be fetched by id."""

    def __init__(
        self,
        pipe: LCMPipeline,
        model: str,
        *,
        capacity: int,
        max_side: int = MAX_SIZE,
        keep_finished: int = 16,
        max_picture_pixels: int = MAX_SERVED_PICTURE_PIXELS,
        min_side: int = MIN_SERVED_SIDE,
    ) -> None:
        self._pipe = pipe
        self._max_side = max_side
        self.max_picture_pixels = max_picture_pixels
        self._min_side = min_side
        self._model = model
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=capacity)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep_finished = keep_finished
        self._lock = threading.Lock()
        self._closed = False
        self.capacity = capacity
        self.running: Job | None = None
        self.outcomes: Counter[str] = Counter()  # jobs done, failed, cancelled since the start
        self.submitted = 0  # jobs accepted since the start (queued; counted at once)
        self.last_seconds = 1.0
        self._worker = threading.Thread(target=self._work, name="lcm-lite-worker", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(
        self,
        request: Request,
        *,
        previews: bool = False,
        on_step: Callable[[int, int, bytes | None], None] | None = None,
    ) -> Job:
        """Queue ``request``; raises :class:`QueueFull` when every slot is taken,
        :class:`Cancelled` once :meth:`close` has begun, and UsageError for a negative prompt the
        model takes none of, a clip_skip past its layers, a prompt weight that is not a number
        and LoRA weights that are not one per adapter loaded (the pipeline's own rules, now
        rather than as a failed job) and for
        a picture refused from its header: not a picture, over ``max_picture_pixels``, or
        making an image with a side over ``max_side`` or under ``min_side``. ``on_step`` is
        told each step (in the worker thread: it must be quick)."""
        self._pipe.check_negative_prompt(request.negative_prompt)
        self._pipe.check_prompt_options(request)
        self._pipe.check_lora_weights(request.lora_weights)
        self._pipe.check_control(request)
        controls = request.control_image
        controls = controls if isinstance(controls, (list, tuple)) else [controls]
        for picture in [request.image, *controls]:
            if picture is not None:
                check_before_decoding(
                    picture,
                    request.width,
                    request.height,
                    self._pipe.folder.vae_scale_factor,
                    self._max_side,
                    max_pixels=self.max_picture_pixels,
                    min_side=self._min_side,
                )
        if request.mask_image is not None:
            check_headers(request.mask_image, self.max_picture_pixels)
        job = Job(request, previews, on_step=on_step)
        with self._lock:
            if self._closed:
                raise Cancelled("the server is shutting down")
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(self._retry_after()) from None
            self._jobs[job.id] = job
            self.submitted += 1
            self._forget_old_jobs()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def cancel_running(self) -> None:
        """Make the running job stop after its current step (it fails with Cancelled); the
        jobs after it run as usual."""
        if (job := self.running) is not None:
            job.cancel()

    def close(self) -> None:
        """Refuse new jobs, fail the queued ones, and return once the running job has finished."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                        job.fail(Cancelled("the server is shutting down"))
            self._queue.put(None)
        self._worker.join()

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.last_seconds * (self.waiting + 1)))

    def _forget_old_jobs(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.outcome.done()]
        for key in finished[: max(0, len(finished) - self._keep_finished)]:
            del self._jobs[key]

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if not job.outcome.set_running_or_notify_cancel():  # cancelled while it waited
                job.forget_picture()
                self.outcomes["cancelled"] += 1
                continue
            self.running = job
            try:
                self._run(job)
            except LcmLiteError as error:
                log.warning("job %s failed: %s", job.id, error)
                job.fail(error)
            except Exception as error:  # the worker must outlive any one job
                log.exception("job %s failed", job.id)
                job.fail(error)
            finally:
                self.outcomes["cancelled" if job.cancelled else job.state] += 1
                self.running = None  # after the count: a reader that sees None sees the count

    def _run(self, job: Job) -> None:
        """Plan the job's request (its picture decoded here, off the event loop, and held to the
        server's largest side), show the resolved request (without the picture's bytes),
        generate."""
        clock = time.perf_counter()
        job.started = time.time()
        plan = self._pipe.plan(job.request, self._max_side)
        job.request = replace(plan.request, image=None)
        result = self._pipe.generate(plan, callback=lambda info: self._progress(job, info))
        images = [
            _png_bytes(image, result.metadata(index, self._model))
            for index, image in enumerate(result)
        ]
        self.last_seconds = time.perf_counter() - clock
        job.preview = None
        job.succeed(images, self.last_seconds, result.timings)

    def _progress(self, job: Job, info: StepInfo) -> bool:
        if job.previews and not job.cancelled:
            job.preview = _png_bytes(info.preview()[0], {})
        job.step = info.step
        if job.on_step is not None:
            job.on_step(info.step, info.num_steps, job.preview)
        return not job.cancelled


def _png_bytes(image: Image.Image, metadata: dict[str, object]) -> bytes:
    """PNG bytes carrying the same metadata as ``lcm-lite generate`` writes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(metadata))
    return buffer.getvalue()
