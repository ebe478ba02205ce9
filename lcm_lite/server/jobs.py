"""Generation jobs for the server: one worker thread owns the pipeline and runs the jobs one at a
time, in order, from a bounded queue; a full queue is refused at once instead of piling up.

A job goes ``queued -> running -> done | failed``; its ``step`` counts the LCM steps done.
Cancelling a job stops it alone: a queued one fails at once, a running one after its current step.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import queue
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lcm_lite.errors import Cancelled, LcmLiteError
from lcm_lite.images.png import png_info
from lcm_lite.images.preprocess import load_image, output_size
from lcm_lite.request import MAX_SIZE

if TYPE_CHECKING:
    from PIL import Image

    from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
    from lcm_lite.pipeline.results import StepInfo

log = logging.getLogger("lcm_lite.server")


class QueueFull(Exception):
    """Every queue slot is taken; ``retry_after`` guesses, in whole seconds, when one frees."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the generation queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Request:
    """One validated generation request (the names of the CLI's options and the PNG metadata)."""

    prompt: str
    seed: int
    width: int | None  # None: the starting picture's size (image to image)
    height: int | None
    guidance: float
    steps: int
    num_images: int
    image: bytes | None = field(default=None, repr=False)  # the starting picture's file bytes
    strength: float = 0.8
    vae: str = "full"
    previews: bool = False  # keep the latest step's preview (needs a tiny VAE)
    negative_prompt: str | None = None  # classifier-free guidance (plain SD with LCM-LoRA)


@dataclass
class Job:
    """A request and what became of it; written by the worker, read by the HTTP threads."""

    request: Request
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    state: str = "queued"
    step: int = 0
    images: list[bytes] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    preview: bytes | None = None  # PNG of the first image's latest preview, while it runs
    finished: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    _on_finish: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def when_finished(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from the worker thread) once the job is done or failed; at once
        if it already is."""
        with self._lock:
            if not self.finished.is_set():
                self._on_finish.append(callback)
                return
        callback()

    def cancel(self) -> None:
        """Stop this job: a queued job fails now, a running one after its current step."""
        with self._lock:
            self.cancelled = True
            queued = self.state == "queued"
        if queued:
            self.fail(Cancelled("the job was cancelled"))

    def start(self) -> bool:
        """Mark the job running, unless it was cancelled while it waited."""
        with self._lock:
            if not self.cancelled:
                self.state = "running"
            return not self.cancelled

    def fail(self, error: BaseException) -> None:
        self.state, self.error = "failed", error
        self._finish()

    def succeed(self, images: list[bytes], seconds: float, timings: dict[str, float]) -> None:
        self.images, self.seconds, self.timings = images, seconds, timings
        self.state = "done"
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self.finished.is_set():
                return
            self.finished.set()
            callbacks, self._on_finish = self._on_finish, []
        for callback in callbacks:
            callback()


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
    ) -> None:
        self._pipe = pipe
        self._max_side = max_side
        self._model = model
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=capacity)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep_finished = keep_finished
        self._lock = threading.Lock()
        self._closed = False
        self.capacity = capacity
        self.running: Job | None = None
        self.outcomes: Counter[str] = Counter()  # jobs done, failed, cancelled since the start
        self.last_seconds = 1.0
        self._worker = threading.Thread(target=self._work, name="lcm-lite-worker", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, request: Request) -> Job:
        """Queue ``request``; raises :class:`QueueFull` when every slot is taken,
        :class:`Cancelled` once :meth:`close` has begun, and UsageError for a negative prompt the
        model takes none of (the pipeline's own rule, now rather than as a failed job)."""
        self._pipe.check_negative_prompt(request.negative_prompt)
        job = Job(request)
        with self._lock:
            if self._closed:
                raise Cancelled("the server is shutting down")
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(self._retry_after()) from None
            self._jobs[job.id] = job
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
                    job.fail(Cancelled("the server is shutting down"))
            self._queue.put(None)
        self._worker.join()

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.last_seconds * (self.waiting + 1)))

    def _forget_old_jobs(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.finished.is_set()]
        for key in finished[: max(0, len(finished) - self._keep_finished)]:
            del self._jobs[key]

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if not job.start():  # cancelled while it waited
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
        request = job.request
        clock = time.perf_counter()
        picture = None
        if request.image is not None:  # decoded here, off the event loop
            picture = load_image(request.image)
            width, height = output_size(
                picture,
                request.width,
                request.height,
                self._pipe.folder.vae_scale_factor,
                self._max_side,
            )
            job.request = request = dataclasses.replace(request, width=width, height=height)
        result = self._pipe(
            request.prompt,
            negative_prompt=request.negative_prompt,
            image=picture,
            strength=request.strength,
            steps=request.steps,
            guidance_scale=request.guidance,
            width=request.width,
            height=request.height,
            num_images=request.num_images,
            seed=request.seed,
            vae=request.vae,
            callback=lambda info: self._progress(job, info),
        )
        images = [
            _png_bytes(image, result.metadata(index, self._model))
            for index, image in enumerate(result)
        ]
        self.last_seconds = time.perf_counter() - clock
        job.preview = None
        job.succeed(images, self.last_seconds, result.timings)

    def _progress(self, job: Job, info: StepInfo) -> bool:
        if job.request.previews and not job.cancelled:
            job.preview = _png_bytes(info.preview()[0], {})
        job.step = info.step
        return not job.cancelled


def _png_bytes(image: Image.Image, metadata: dict[str, object]) -> bytes:
    """PNG bytes carrying the same metadata as ``lcm-lite generate`` writes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(metadata))
    return buffer.getvalue()
