"""The daemon: wires capture → detect → spool and spool → uplink, health, systemd.

Concurrency model (see README, architecture): one asyncio loop in the main
thread runs the uplink, the health reporter, the status writer and the
watchdog; capture + detection run in one worker thread (OpenCV/ONNX release
the GIL). The only thing the stages share is the spool, whose calls are short
and thread-safe, so a slow or dead stage never blocks another: a dead server
only grows the spool, a dead camera only stops new readings.

Liveness is never faked: ``WATCHDOG=1`` is sent only while every running
stage's heartbeat is fresh (``WatchdogGate``), and a stage that crashes makes
the agent exit non-zero so that systemd restarts it, instead of running on
with a dead worker.

Test hook (documented in README, "Testing"): when the environment names
``LPR_AGENT_TEST_FREEZE_FILE`` and that file exists, the detection sink blocks
(the worker thread is stuck inside its loop) until the file is removed; this
is how the systemd test proves the watchdog restarts a frozen pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lpr_agent import __version__
from lpr_agent.config import EX_CONFIG, AgentConfig, ConfigError, load_config
from lpr_agent.health import HealthReporter
from lpr_agent.logs import setup_logging
from lpr_agent.malloc import limit_arenas
from lpr_agent.status import STATUS_FILE, DaemonStatus, status_line, write_status
from lpr_agent.systemd import Notifier, WatchdogGate, extended_start, watchdog_interval

if TYPE_CHECKING:  # the stages import OpenCV/ONNX/Socket.IO: load them only when started
    from lpr_agent.detect import DetectionPipeline
    from lpr_agent.detect.pipeline import PipelineStats
    from lpr_agent.metrics.collector import AgentMetrics
    from lpr_agent.metrics.server import MetricsServer
    from lpr_agent.protocol import DetectionResult
    from lpr_agent.spool import Spool
    from lpr_agent.uplink import Uplink

log = logging.getLogger(__name__)
_T = TypeVar("_T")

EXIT_OK = 0
EXIT_FAILURE = 1  # systemd Restart=on-failure restarts us
FREEZE_ENV = "LPR_AGENT_TEST_FREEZE_FILE"


class StageCrashed(RuntimeError):
    pass


class Agent:
    def __init__(self, config: AgentConfig, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = Notifier()
        self.gate = WatchdogGate(config.daemon.stall_after_s)
        self.state = "starting"
        self.started_at = time.time()
        self.exit_code = EXIT_OK
        self.spool: Spool | None = None
        self.pipeline: DetectionPipeline | None = None
        self.pipeline_thread: threading.Thread | None = None
        self.pipeline_stop = threading.Event()
        self.pipeline_error: BaseException | None = None
        self.pipeline_ended = False
        self.uplink: Uplink | None = None
        self.uplink_task: asyncio.Task[None] | None = None
        self.uplink_stop: asyncio.Event | None = None
        self.health: HealthReporter | None = None
        self.health_task: asyncio.Task[None] | None = None
        self.health_stop: asyncio.Event | None = None
        self.stop_event: asyncio.Event | None = None
        self.reload_event: asyncio.Event | None = None
        self.stop_reason = ""
        self.stuck: list[str] = []
        self.metrics: AgentMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        freeze = os.environ.get(FREEZE_ENV)
        self.freeze_file = Path(freeze) if freeze else None

    # --- entry -----------------------------------------------------------------------

    def run(self) -> int:
        limit_arenas()  # before any thread starts
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self.reload_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload_event.set)
        log.info(
            "agent starting",
            extra={"version": __version__, "pid": os.getpid(),
                   "config": str(self.config_path or "defaults"),
                   "camera_id": self.config.camera.camera_id},
        )
        watchdog_task = asyncio.create_task(self._watchdog_loop())
        try:
            await self._start()
            if not self.stop_event.is_set():
                self.state = "running"
                self.notifier.ready(self.status_line())
                log.info("agent ready", extra={"state_dir": str(self.config.state_dir)})
                await self._supervise()
        except StageCrashed as exc:
            log.error("stage failed; exiting so that systemd restarts the agent",
                      extra={"reason": str(exc)})
            self.exit_code = EXIT_FAILURE
        except PermissionError as exc:
            # Restarting will not grant the permission: fail like a bad config.
            log.critical("cannot use the state directory or spool; set [spool] path / "
                         "[daemon] state_dir or run under the systemd unit "
                         "(StateDirectory=)", extra={"error": exc})
            self.exit_code = EX_CONFIG
        except Exception:
            log.exception("agent failed")
            self.exit_code = EXIT_FAILURE
        finally:
            await self._shutdown()
            watchdog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog_task
        log.info("agent stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def request_stop(self, reason: str = "request") -> None:
        if self.stop_event is not None and not self.stop_event.is_set():
            log.info("stop requested", extra={"reason": reason})
            self.stop_reason = reason
            self.state = "stopping"
            self.notifier.stopping(f"stopping ({reason})")
            self.stop_event.set()

    # --- start-up --------------------------------------------------------------------

    async def _start(self) -> None:
        from lpr_agent.spool import Spool

        state_dir = self.config.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.notifier.status("opening spool")
        self.spool = await asyncio.to_thread(Spool.open, self.config.spool)
        self._start_metrics()
        self.write_status()
        await self._start_pipeline()
        self._start_uplink()
        self._start_health()

    async def _start_pipeline(self) -> None:
        from lpr_agent.detect import DetectionPipeline

        config = self.config
        pipeline = DetectionPipeline(config.source, config.detector, config.camera, self._sink)
        self.notifier.status("loading detector model")
        await self._load_with_extended_timeout(pipeline.load)
        self.pipeline = pipeline
        self.pipeline_stop = threading.Event()
        self.pipeline_error = None
        self.pipeline_ended = False
        started = time.monotonic()
        thread = threading.Thread(
            target=self._pipeline_main, args=(pipeline, self.pipeline_stop),
            name="detect", daemon=True,  # an abandoned frame must not block exit
        )
        self.pipeline_thread = thread
        # Before the first loop turn the heartbeat may be unset: count from the start.
        self.gate.add(
            "pipeline",
            lambda: pipeline.heartbeat or started,
            lambda: thread.is_alive() and not self.pipeline_stop.is_set(),
        )
        thread.start()
        log.info("capture started", extra={"source": config.source.url})

    async def _load_with_extended_timeout(self, load: Callable[[], None]) -> None:
        limit = self.config.daemon.model_load_timeout_s
        try:
            await extended_start(self.notifier, load, limit, "detector model")
        except TimeoutError:
            raise StageCrashed(f"detector model did not load within {limit:g}s") from None

    def _pipeline_main(self, pipeline: DetectionPipeline, stop: threading.Event) -> None:
        try:
            pipeline.run(stop)
        except BaseException as exc:
            self.pipeline_error = exc
            log.exception("detection pipeline crashed")
        else:
            self.pipeline_ended = True
            if not stop.is_set():
                log.warning("frame source ended; the uplink keeps draining the spool")

    def _sink(self, result: DetectionResult) -> None:
        from lpr_agent.spool import Kind

        if self.freeze_file is not None and self.freeze_file.exists():
            log.warning("test hook: pipeline frozen", extra={"file": str(self.freeze_file)})
            while self.freeze_file.exists():
                time.sleep(0.1)
        payload = result.wire()
        self.spool.put(Kind.DETECTION, payload)
        if self.metrics is not None:
            self.metrics.observe_detection(result.processing_time_ms / 1000)
        # After put returned the reading is durable; this line is the ground
        # truth the crash tests compare the server against.
        log.debug("spooled detection",
                  extra={"event_id": payload.get("event_id"),
                         "plates": ",".join(payload.get("ocr_results") or []),
                         "rate_limit_key": payload.get("event_id")})

    def _start_uplink(self) -> None:
        from lpr_agent.uplink import Uplink

        spool: Any = self.spool
        if self.metrics is not None:
            from lpr_agent.metrics.spooltap import DeliveryTap

            spool = DeliveryTap(self.spool, self.metrics.delivered)
        uplink = Uplink(self.config.uplink, self.config.camera, spool)
        stop = asyncio.Event()
        self.uplink, self.uplink_stop = uplink, stop
        self.uplink_task = asyncio.create_task(uplink.run(stop), name="uplink")
        started = time.monotonic()
        task = self.uplink_task
        self.gate.add(
            "uplink",
            lambda: uplink.heartbeat or started,
            lambda: not task.done() and not stop.is_set(),
        )
        log.info("uplink started", extra={"server": self.config.uplink.server_url})

    def _start_health(self) -> None:
        from lpr_agent.spool import Kind

        def put(payloads: list[dict[str, Any]]) -> None:
            try:
                self.spool.put_many([(Kind.HEALTH, p) for p in payloads])
            except Exception:
                if self.metrics is not None:
                    self.metrics.spool_failed(Kind.HEALTH, len(payloads))
                raise
            if self.metrics is not None:
                self.metrics.spooled(Kind.HEALTH, len(payloads))

        self.health = HealthReporter(
            self.config.health,
            self.config.camera,
            disk_path=self.config.state_dir,
            pipeline_stats=self._pipeline_stats,
            spool_stats=lambda: self.spool.stats() if self.spool is not None else None,
            uplink_stats=lambda: self.uplink.stats() if self.uplink is not None else None,
            max_fps=lambda: self.config.source.max_fps,
            put=put,
        )
        self.health_stop = asyncio.Event()
        self.health_task = asyncio.create_task(self.health.run(self.health_stop), name="health")

    def _pipeline_stats(self) -> PipelineStats | None:
        if self.pipeline is None or self.pipeline_error is not None:
            return None
        return self.pipeline.stats()

    # --- running ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        assert self.stop_event is not None and self.reload_event is not None
        interval = self.config.daemon.status_interval_s
        while not self.stop_event.is_set():
            waiters = {
                asyncio.ensure_future(self.stop_event.wait()),
                asyncio.ensure_future(self.reload_event.wait()),
            }
            _, pending = await asyncio.wait(
                waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED
            )
            for w in pending:
                w.cancel()
            if self.stop_event.is_set():
                break
            if self.reload_event.is_set():
                self.reload_event.clear()
                await self.reload()
            self._check_stages()
            self.tick()

    def _check_stages(self) -> None:
        if self.pipeline_error is not None:
            raise StageCrashed(f"detection pipeline crashed: {self.pipeline_error!r}")
        task = self.uplink_task
        if task is not None and task.done() and not task.cancelled():
            exc = task.exception()
            if exc is not None:
                raise StageCrashed(f"uplink crashed: {exc!r}")
            if self.uplink_stop is not None and not self.uplink_stop.is_set():
                raise StageCrashed("uplink returned without being asked to stop")
        task = self.health_task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            raise StageCrashed(f"health reporter crashed: {task.exception()!r}")

    def tick(self) -> None:
        """Refresh status.json and the systemd STATUS= line."""
        snapshot = self.status_snapshot()
        self.notifier.status(snapshot.status_line)
        try:
            write_status(self.config.state_dir / STATUS_FILE, snapshot)
        except OSError as exc:
            log.warning("cannot write status file", extra={"error": exc})

    async def _watchdog_loop(self) -> None:
        """Ping systemd at half WatchdogSec, but only while every stage is turning."""
        interval = watchdog_interval()
        period = interval if interval is not None else 1.0
        while True:
            await asyncio.sleep(period)
            if self.state == "starting":
                continue  # the model loader pings while it makes progress
            stuck = self.gate.stuck()
            if stuck != self.stuck:
                if stuck:
                    log.error(
                        "stage stuck: withholding watchdog pings so that systemd restarts us",
                        extra={"stages": ",".join(stuck),
                               "stall_after_s": self.gate.stall_after_s},
                    )
                else:
                    log.info("stages turning again", extra={"was": ",".join(self.stuck)})
                self.stuck = stuck
            if not stuck and interval is not None:
                self.notifier.watchdog()

    def status_line(self) -> str:
        return self.status_snapshot().status_line

    @staticmethod
    def _safe(fn: Callable[[], _T | None]) -> _T | None:
        # The status line and file must be written even while a stage's stats() fails.
        try:
            return fn()
        except Exception:
            return None

    def status_snapshot(self) -> DaemonStatus:
        p = self._safe(self._pipeline_stats)
        s = self._safe(lambda: self.spool.stats() if self.spool else None)
        u = self._safe(lambda: self.uplink.stats() if self.uplink else None)
        line = status_line(self.state, p, s, u, self.stuck)
        return DaemonStatus(
            version=__version__, pid=os.getpid(), state=self.state,
            started_at=self.started_at, updated_at=time.time(),
            status_interval_s=self.config.daemon.status_interval_s,
            config=str(self.config_path) if self.config_path else None,
            camera_id=self.config.camera.camera_id,
            checkpoint_id=self.config.camera.checkpoint_id,
            status_line=line, stuck=self.stuck,
            metrics_url=self.metrics_server.url if self.metrics_server else None,
            pipeline=p.as_dict() if p is not None else {}, pipeline_ended=self.pipeline_ended,
            spool=s.as_dict() if s is not None else {},
            uplink=u.as_dict() if u is not None else {},
            health=self.health.last if self.health else [],
            health_at=self.health.last_at if self.health else None,
        )

    def write_status(self) -> None:
        write_status(self.config.state_dir / STATUS_FILE, self.status_snapshot())

    def _start_metrics(self) -> None:
        """Metrics of this Agent, and the Prometheus endpoint if ``[metrics] listen``."""
        from lpr_agent.metrics.collector import AgentMetrics, Sources
        from lpr_agent.metrics.server import MetricsServer

        self.metrics = AgentMetrics(Sources(
            pipeline=self._pipeline_stats,
            spool=lambda: self.spool.stats() if self.spool else None,
            uplink=lambda: self.uplink.stats() if self.uplink else None,
            health=lambda: self.health.last if self.health else [],
            max_fps=lambda: self.config.source.max_fps,
            info=lambda: {"version": __version__, "camera_id": self.config.camera.camera_id,
                          "checkpoint_id": self.config.camera.checkpoint_id},
            started_at=self.started_at,
        ))
        if self.config.metrics.listen:
            self.metrics_server = MetricsServer.serve(self.config.metrics.listen,
                                                      self.metrics.registry)

    # --- reload ----------------------------------------------------------------------

    async def reload(self) -> None:
        """SIGHUP: apply a valid new config; keep the old one (and say why) otherwise."""
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            log.error("config reload rejected; keeping the running config",
                      extra={"reason": str(exc).replace("\n", "; ")})
            return
        old = self.config
        if new == old:
            log.info("config reloaded: no change")
            return
        self.notifier.reloading()
        log.info("config reload", extra={"config": str(self.config_path or "defaults")})
        if new.spool != old.spool or new.daemon.state_dir != old.daemon.state_dir:
            log.warning("spool/state_dir changes take effect only after a restart")
            new = new.model_copy(update={"spool": old.spool, "daemon": new.daemon.model_copy(
                update={"state_dir": old.daemon.state_dir})})
        self.config = new
        setup_logging(new.logging)
        self.gate.stall_after_s = new.daemon.stall_after_s
        if self.health is not None:
            self.health.config, self.health.identity = new.health, new.camera
        if (new.source, new.detector, new.camera) != (old.source, old.detector, old.camera):
            await self._stop_pipeline(self.config.daemon.shutdown_timeout_s)
            await self._start_pipeline()
        if (new.uplink, new.camera) != (old.uplink, old.camera):
            await self._stop_uplink(self.config.daemon.shutdown_timeout_s)
            self._start_uplink()
        self.notifier.ready(self.status_line())

    # --- shutdown --------------------------------------------------------------------

    async def _stop_pipeline(self, timeout: float) -> None:
        thread = self.pipeline_thread
        self.pipeline_stop.set()
        self.gate.remove("pipeline")
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if thread.is_alive():
            # Abandon the frame in progress: every reading already put is durable.
            log.error("detection thread did not stop in time; abandoning it",
                      extra={"timeout_s": timeout})
            raise StageCrashed("detection thread did not stop")
        self.pipeline_thread = None

    async def _stop_uplink(self, timeout: float) -> None:
        task, stop = self.uplink_task, self.uplink_stop
        self.gate.remove("uplink")
        if task is None or stop is None:
            return
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.error("uplink did not stop in time; cancelling it", extra={"timeout_s": timeout})
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        except Exception:
            pass  # already reported by _check_stages / its own logging
        self.uplink_task = None

    async def _shutdown(self) -> None:
        if self.state != "stopping":
            self.state = "stopping"
            self.notifier.stopping("stopping")
        budget = self.config.daemon.shutdown_timeout_s
        t0 = time.monotonic()
        try:
            await self._stop_pipeline(budget * 0.5)
        except StageCrashed:
            self.exit_code = EXIT_FAILURE
        if self.health_stop is not None and self.health_task is not None:
            self.health_stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.health_task, 2.0)
        # The uplink gets the rest of the budget to finish what is in flight.
        await self._stop_uplink(max(1.0, budget - (time.monotonic() - t0)))
        self.state = "stopped"
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.stop)
            self.metrics_server = None
        if self.spool is not None:
            with contextlib.suppress(OSError):
                self.write_status()
            try:
                self.spool.close()
            except Exception:
                log.exception("closing the spool failed")
                self.exit_code = EXIT_FAILURE
            self.spool = None

