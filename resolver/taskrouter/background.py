"""The TaskRouter hook's attaches, run after the hook has answered: TaskRouter waits at most 15 seconds.

`/hooks/taskrouter` checks the signature and the event, writes an `attach` record with outcome `accepted`,
hands the attach to `HookJobs.submit` and answers 204 at once, whatever Twilio's REST API is doing. The
attach then runs in its own greenlet (gunicorn's gevent worker: `gevent.spawn`) or thread (anywhere else: the
Flask test client, the demo), with bounded retries inside a bounded total time (`HookPolicy`):
* each Twilio call already retries 5xx/429/network errors (`TwilioRest`), and no call, try or backoff wait
  runs past the job's deadline (`TwilioRest(deadline=...)`);
* the whole attach is retried when Twilio stayed unavailable or slow, or the task kept changing; attaching
  again is safe (conditional writes, entries de-duplicated);
* every job ends with exactly one outcome record (`written`, `unchanged` or `refused` with its reason, the
  number of attempts and the time taken), carrying the hook request's `request_id` and client, so it joins
  its `accepted` record. An unexpected exception is `refused`/`internal_error`, never silence. Jobs still
  running when the app closes (worker shutdown) are waited for a bounded time, then recorded as
  `refused`/`shutdown`: an `accepted` record without an outcome means the process was killed.
`spawn` is injectable: tests hold a job back to prove the request was not held open, then run it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import requests

from ..access.links import MediaSpec
from ..access.signing import Signer
from ..audit.log import AuditError, AuditLog
from ..config import Settings
from ..errors import ResolverError
from .attach import Attacher
from .errors import TaskConflict, TwilioTimeout, TwilioUnavailable
from .rest import TwilioRest

log = logging.getLogger(__name__)
RETRYABLE = (TwilioUnavailable, TwilioTimeout, TaskConflict)


@dataclass(frozen=True)
class HookPolicy:
    attempts: int = 4  # whole attaches per event
    budget: float = 60.0  # seconds from the acknowledgement to the end of the last try (tasks live ~5 min after)
    backoff: tuple[float, ...] = (2.0, 5.0, 10.0)  # waits between whole attaches
    rest_backoff: tuple[float, ...] | None = None  # TwilioRest's waits between tries of one call (None: BACKOFF)
    max_pending: int = 500  # jobs one process runs at once; beyond, the hook answers 503 hook_busy
    drain: float = 10.0  # seconds close() waits for running jobs before recording them as `shutdown`


class HookBusy(ResolverError):
    status, code = 503, "hook_busy"
    message = "Too many TaskRouter events are being attached right now; this one was not accepted."


Spawn = Callable[[Callable[[], None]], object]
# Builds the attacher for one job: its TwilioRest never runs past `deadline` (a time.monotonic() value).
AttacherFactory = Callable[[float, "HookPolicy"], Attacher]


def default_spawn() -> Spawn:
    """gevent.spawn under gunicorn's gevent worker (monkey-patched), a daemon thread anywhere else."""
    try:
        from gevent import monkey  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - gevent is a dependency
        monkey = None  # type: ignore[assignment]
    if monkey is not None and monkey.is_module_patched("socket"):
        import gevent  # type: ignore[import-untyped]

        return gevent.spawn

    def thread(fn: Callable[[], None]) -> threading.Thread:
        t = threading.Thread(target=fn, name="resolver-hook-attach", daemon=True)
        t.start()
        return t

    return thread


def attacher_factory(settings: Settings, signer: Signer, http: requests.Session) -> AttacherFactory:
    """Attachers whose Twilio calls stop at the job's deadline, with the policy's per-call backoff."""

    def make(deadline: float, policy: HookPolicy) -> Attacher:
        backoff = {} if policy.rest_backoff is None else {"backoff": policy.rest_backoff}
        return Attacher(settings, signer, TwilioRest(settings, http, deadline=deadline, **backoff))  # type: ignore[arg-type]

    return make


@dataclass
class _Job:
    workspace_sid: str
    task_sid: str
    who: dict[str, object]
    started: float
    done: bool = False  # its outcome is recorded


class HookJobs:
    def __init__(self, audit: AuditLog, attacher: AttacherFactory, *, spawn: Spawn | None = None,
                 policy: HookPolicy | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.audit = audit
        self.attacher = attacher
        self.spawn = spawn or default_spawn()
        self.policy = policy or HookPolicy()
        self.clock = clock
        self.sleep = sleep
        self._jobs: dict[int, _Job] = {}
        self._cond = threading.Condition()
        self._closed = False
        # registered after the audit log's own atexit, so it runs first: outcomes land before chain_end
        atexit.register(_close_quietly, weakref.ref(self))

    def submit(self, workspace_sid: str, task_sid: str, who: Mapping[str, object]) -> None:
        """Record `accepted` and start the attach; returns at once. HookBusy when too many are running."""
        with self._cond:
            if self._closed or len(self._jobs) >= self.policy.max_pending:
                raise HookBusy()
            job = _Job(workspace_sid, task_sid, dict(who), started=self.clock())
            self._jobs[id(job)] = job
        try:
            self.audit.record("attach", outcome="accepted", task_sid=task_sid, workspace_sid=workspace_sid,
                              **job.who)
            self.spawn(lambda: self._run(job))
        except BaseException:
            self._finish(job)
            raise

    def _run(self, job: _Job) -> None:
        try:
            self._attach(job)
        except Exception:
            log.exception("taskrouter hook: attach failed unexpectedly")
            self._record(job, "refused", reason="internal_error")
        except BaseException:  # the greenlet was killed (worker shutdown): still say so
            self._record(job, "refused", reason="shutdown")
            raise
        finally:
            self._finish(job)

    def _attach(self, job: _Job) -> None:
        policy = self.policy
        deadline = job.started + policy.budget
        for attempt in range(1, policy.attempts + 1):
            try:
                result = self.attacher(deadline, policy).attach(
                    job.workspace_sid, job.task_sid, keep_defaults=True, only_with_recordings=True)
            except RETRYABLE as e:
                wait = policy.backoff[min(attempt, len(policy.backoff)) - 1] if policy.backoff else 0.0
                if attempt == policy.attempts or self.clock() + wait >= deadline:
                    self._record(job, "refused", reason=e.code, attempts=attempt)
                    return
                log.info("taskrouter hook: %s on attempt %d; retrying in %.1fs", e.code, attempt, wait)
                self.sleep(wait)
                continue
            except ResolverError as e:
                self._record(job, "refused", reason=e.code, attempts=attempt)
                return
            outcome = "written" if result.written else "unchanged"
            self._record(job, outcome, count=len(result.added), attempts=attempt, links=result.added)
            return

    def _record(self, job: _Job, outcome: str, *, links: Sequence[tuple[MediaSpec, dict]] = (),
                **fields: object) -> None:
        """The job's outcome, after a `link` record for every entry it wrote."""
        job.done = True
        common = {"task_sid": job.task_sid, "workspace_sid": job.workspace_sid, **job.who}
        try:
            for spec, _entry in links:
                self.audit.record("link", outcome="issued", source=spec.source or None, key=spec.key or spec.sid,
                                  media_type=spec.type, **common)
            self.audit.record("attach", outcome=outcome, duration_ms=int((self.clock() - job.started) * 1000),
                              **fields, **common)
        except AuditError:
            log.error("taskrouter hook: the attach outcome (%s) could not be audited", outcome)

    def _finish(self, job: _Job) -> None:
        with self._cond:
            self._jobs.pop(id(job), None)
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)

    def wait(self, timeout: float) -> bool:
        """Wait until no job is running (tests, shutdown); False if some still are after `timeout`."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._jobs:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, wait for running jobs, and record the ones still running as refused (`shutdown`).

        A job that finishes later still writes its own outcome if the audit log is open: two records rather
        than none."""
        with self._cond:
            self._closed = True
        if self.wait(self.policy.drain if timeout is None else timeout):
            return
        with self._cond:
            left = [job for job in self._jobs.values() if not job.done]
        for job in left:
            self._record(job, "refused", reason="shutdown")


def _close_quietly(ref: weakref.ref[HookJobs]) -> None:
    jobs = ref()
    if jobs is not None:
        jobs.close()
