"""The HTTP server: Tornado in a thread of its own, serving the pages, the API, the streams and ``/metrics``.

Tornado was chosen for a Pi: one pure-Python package with no dependencies
(aarch64 wheels with its small C speed-up), about 27 MB peak RSS and 0.15 s
from import to the first response on our machine, where aiohttp took 36 MB and
0.4-0.7 s. It runs on asyncio, so one thread serves every viewer, stream and
event subscriber; image encoding and file work go to worker threads.

Every path but ``/healthz`` and ``/static/`` needs the access token when one
is configured (:mod:`.access`). The request log never shows query strings
(a ``?token=`` link must not end up in the journal). State-changing requests
are ``POST`` with a JSON body, and a request from a page of another origin is
refused, so a web page elsewhere cannot make the browser save or move photos.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

from ...bundle import ResizePolicy
from ...errors import EdgeclassError
from ...pipeline.preprocess import crop_box
from ..dataset import Dataset, DatasetFolderError
from ..review import ReviewError, UncertainFrames
from ..stream import result_record
from . import pages
from .access import Access, AccessError, parse_listen
from .frames import FrameHub, encode_jpeg
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import render_metrics

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
COLLECT_QUALITY = 95  # photos for training: keep detail, a few hundred KB each
MAX_BURST = 500
SSE_KEEPALIVE = 15.0  # seconds: a comment line keeps proxies from closing a quiet event stream
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class Site:
    """What the handlers serve: the loop, the frames, the access check, the dataset pages' folders."""

    def __init__(self, hub: FrameHub, access: Access, *, dataset: Dataset | None = None,
                 uncertain_dir: Path | None = None, labels: tuple[str, ...] | None = None) -> None:
        self.hub = hub
        self.access = access
        self.dataset = dataset
        self.uncertain_dir = uncertain_dir
        self.fixed_labels = labels
        self.run = None  # the FrameLoop, once it starts
        self.files = None  # the worker for file work (set by the server)

    def labels(self) -> tuple[str, ...]:
        """The collect and review buttons: the labels given, else the running bundle's."""
        if self.fixed_labels:
            return self.fixed_labels
        bundle = getattr(self.run, "bundle", None)
        return tuple(bundle.labels) if bundle is not None else ()

    def uncertain(self) -> UncertainFrames | None:
        if self.dataset is None or self.uncertain_dir is None:
            return None
        return UncertainFrames(self.uncertain_dir, self.dataset)


def _latest_json(site: Site) -> tuple[int, dict]:
    """``(status code, body)`` of /api/latest."""
    latest = site.hub.latest
    run = site.run
    if run is not None and getattr(run, "bundle", None) is None:
        return 404, {"error": "no model is running (capture only), so there are no decisions"}
    if latest is None or latest.decision is None:
        return 503, {"error": "no frame classified yet"}
    record = result_record("latest", latest.frame, latest.decision)
    h, w = latest.frame.rgb.shape[:2]
    record["frame_size"] = [w, h]
    record["crop"] = list(_crop(run, w, h))
    return 200, record


def _crop(run, w: int, h: int) -> tuple[int, int, int, int]:
    """The part of a ``w x h`` frame the model sees, as ``(left, top, width, height)``."""
    spec = run.bundle.input
    if spec.resize is not ResizePolicy.CENTER_CROP:
        return 0, 0, w, h
    top, left, ch, cw = crop_box(h, w, spec.height, spec.width)
    return left, top, cw, ch


def _accuracy(metrics: dict) -> str | None:
    int8, fp = metrics.get("int8_accuracy"), metrics.get("float_accuracy")
    if isinstance(int8, (int, float)):
        return f"int8 {int8 * 100:.1f}%" + (f" (float {fp * 100:.1f}%)" if isinstance(fp, (int, float)) else "")
    if isinstance(fp, (int, float)):
        return f"{fp * 100:.1f}%"
    return None


def build_view(site: Site, token: str | None) -> pages.View:
    """The figures the first HTML of a page shows."""
    run = site.run
    view = pages.View(token=token, collect=site.dataset is not None, review=site.uncertain() is not None)
    if run is None:
        return view
    status = run.status()
    bundle = getattr(run, "bundle", None)
    view.has_model = bundle is not None
    view.fps, view.latency_ms, view.source = status.get("fps"), status.get("latency_ms_p50"), status.get("source")
    if bundle is not None:
        view.backend = f"{status.get('backend')} ({status.get('interpreter')})"
        view.bundle_name = bundle.name
        view.accuracy = _accuracy(bundle.metrics)
        snapshot = run.monitor.snapshot(time.monotonic())
        view.rates = snapshot["label_rates_per_min"]
        view.uncertain_rate, view.mean_top_score = snapshot["uncertain_rate"], snapshot["mean_top_score"]
        view.confidence_dropped = snapshot["confidence_dropped"]
    code, latest = _latest_json(site)
    if code == 200:
        view.label, view.score = latest["label"], latest["score"]
        view.top_k = [(t["label"], t["score"]) for t in latest["top_k"]]
        view.frame_size, view.crop = tuple(latest["frame_size"]), tuple(latest["crop"])
    elif site.hub.latest is not None:
        h, w = site.hub.latest.frame.rgb.shape[:2]
        view.frame_size = (w, h)
    return view


class Handler(tornado.web.RequestHandler):
    """Token check, security headers, JSON helpers, and a request log without query strings."""

    open_path = False  # True: answered without the token

    def initialize(self, site: Site) -> None:
        self.site = site

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("Server", "edgeclass")

    def prepare(self) -> None:
        if self.open_path:
            return
        if not self.site.access.allows(self.request.headers.get("Authorization"), self.get_query_argument("token", None)):
            self.set_header("WWW-Authenticate", 'Bearer realm="edgeclass"')
            self.reply(401, {"error": "this device needs its access token: send Authorization: Bearer TOKEN "
                                      "or open the page with ?token=TOKEN"})

    def _request_summary(self) -> str:  # used in Tornado's error logs: never the query string (the token)
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def reply(self, code: int, body: dict | list) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, separators=(",", ":"), default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": self._reason}))

    def token(self) -> str | None:
        """The ``?token=`` this page was opened with, for its own links."""
        return self.get_query_argument("token", None)

    def json_body(self) -> dict:
        """A POST's JSON object; refuses other content types and other sites' pages."""
        origin = self.request.headers.get("Origin")
        if origin is not None and origin not in (f"http://{self.request.host}", f"https://{self.request.host}"):
            raise tornado.web.HTTPError(403, reason=f"requests from {origin} are not allowed")
        if self.request.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise tornado.web.HTTPError(415, reason="send the request body as JSON (Content-Type: application/json)")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, reason="the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, reason="the request body must be a JSON object")
        return body

    async def in_files(self, fn: Callable, *args):
        """Run file work in the files thread (a slow SD card must not hold up the streams)."""
        return await asyncio.get_running_loop().run_in_executor(self.site.files, fn, *args)


class LivePage(Handler):
    def get(self) -> None:
        self.finish(pages.live_page(build_view(self.site, self.token())))


class CollectPage(Handler):
    def get(self) -> None:
        view = build_view(self.site, self.token())
        if self.site.dataset is None:
            self.finish(pages.message_page(view, "Collect", "Collecting photos needs a dataset folder: "
                                           "[http] dataset in device.toml, or edgeclass collect -o DATASET."))
            return
        labels = self.site.labels()
        self.finish(pages.collect_page(view, labels, self.site.dataset.counts(labels), str(self.site.dataset.root)))


class ReviewPage(Handler):
    async def get(self) -> None:
        view = build_view(self.site, self.token())
        frames = self.site.uncertain()
        if frames is None:
            self.finish(pages.message_page(view, "Review", "Reviewing uncertain frames needs both [uncertain] dir "
                                           "and [http] dataset (or edgeclass collect -o DATASET --review DIR)."))
            return
        pending = await self.in_files(frames.pending)
        self.finish(pages.review_page(view, pending, self.site.labels(), str(frames.dataset.root), str(frames.directory)))


class Stream(Handler):
    async def get(self) -> None:
        self.set_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        try:
            async for data in self.site.hub.frames():
                self.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data))
                self.write(data)
                self.write(b"\r\n")
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return  # the viewer went away
        if not self._finished:
            self.finish()


class Snapshot(Handler):
    async def get(self) -> None:
        data = await self.site.hub.snapshot()
        if data is None:
            self.reply(503, {"error": "no frame yet"})
            return
        self.set_header("Content-Type", "image/jpeg")
        self.finish(data)


class Status(Handler):
    def get(self) -> None:
        if self.site.run is None:
            self.reply(503, {"error": "the frame loop has not started yet"})
            return
        self.reply(200, self.site.run.status())


class Latest(Handler):
    def get(self) -> None:
        self.reply(*_latest_json(self.site))


class MonitorApi(Handler):
    def get(self) -> None:
        monitor = getattr(self.site.run, "monitor", None)
        if monitor is None:
            self.reply(404, {"error": "no model is running, so there is nothing to monitor"})
            return
        self.reply(200, monitor.snapshot(time.monotonic()))


class Events(Handler):
    """Server-Sent Events: the current decision at once, then one ``decision`` event per change."""

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        queue = self.site.hub.subscribe()
        try:
            code, latest = _latest_json(self.site)
            if code == 200:
                self._event(latest)
            await self.flush()
            while True:
                try:
                    record = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE)
                except asyncio.TimeoutError:
                    self.write(": keep-alive\n\n")
                else:
                    if record is None:
                        break
                    self._event(record)
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return
        finally:
            self.site.hub.unsubscribe(queue)
        if not self._finished:
            self.finish()

    def _event(self, record: dict) -> None:
        self.write(f"event: decision\ndata: {json.dumps(record, separators=(',', ':'))}\n\n")


class Health(Handler):
    open_path = True

    def get(self) -> None:
        run = self.site.run
        healthy = run is not None and run.healthy()
        self.set_status(200 if healthy else 503)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("ok\n" if healthy else "unhealthy\n")


class Metrics(Handler):
    def get(self) -> None:
        if self.site.run is None:
            self.reply(503, {"error": "the frame loop has not started yet"})
            return
        self.set_header("Content-Type", METRICS_TYPE)
        self.finish(render_metrics(self.site.run))


class CollectApi(Handler):
    """GET: labels and counts; POST ``{"label", "count", "interval"}``: save the current frame (or a burst)."""

    def get(self) -> None:
        if self.site.dataset is None:
            self.reply(404, {"error": "no dataset folder: set [http] dataset, or use edgeclass collect -o DATASET"})
            return
        labels = self.site.labels()
        self.reply(200, {"labels": list(labels), "counts": self.site.dataset.counts(labels),
                         "dataset": str(self.site.dataset.root)})

    async def post(self) -> None:
        dataset, hub = self.site.dataset, self.site.hub
        if dataset is None:
            self.reply(404, {"error": "no dataset folder: set [http] dataset, or use edgeclass collect -o DATASET"})
            return
        body = self.json_body()
        labels = self.site.labels()
        label, count, interval = body.get("label"), body.get("count", 1), body.get("interval", 0)
        if label not in labels:
            self.reply(400, {"error": f"label {label!r} is not one of {', '.join(labels)}"})
            return
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_BURST:
            self.reply(400, {"error": f"count must be a whole number from 1 to {MAX_BURST}"})
            return
        if not isinstance(interval, (int, float)) or isinstance(interval, bool) or not 0 <= interval <= 60:
            self.reply(400, {"error": "interval must be between 0 and 60 seconds"})
            return
        saved, last_seq = [], None
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            latest = hub.latest
            deadline = time.monotonic() + 2.0
            while latest is not None and latest.seq == last_seq and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # a burst saves distinct frames: wait for the next one
                latest = hub.latest
            if latest is None or hub.closed:
                break
            last_seq = latest.seq
            frame = latest.frame
            data = await hub.run_in_encoder(encode_jpeg, frame.rgb, COLLECT_QUALITY)
            try:
                path = await self.in_files(dataset.add, label, data, frame.timestamp)
            except DatasetFolderError as exc:
                self.reply(507 if "full" in str(exc) else 500, {"error": str(exc), "saved": saved})
                return
            saved.append(str(path.relative_to(dataset.root)))
        if not saved:
            self.reply(503, {"error": "no frame from the camera yet"})
            return
        self.reply(200, {"saved": saved, "counts": dataset.counts(labels)})


class ReviewApi(Handler):
    """GET: the frames waiting; POST ``{"stem", "label"}`` moves one into the dataset, ``{"stem", "discard": true}`` removes it."""

    async def get(self) -> None:
        frames = self.site.uncertain()
        if frames is None:
            self.reply(404, {"error": "review needs [uncertain] dir and [http] dataset"})
            return
        pending = await self.in_files(frames.pending)
        self.reply(200, {"labels": list(self.site.labels()), "frames": [p._asdict() for p in pending]})

    async def post(self) -> None:
        frames = self.site.uncertain()
        if frames is None:
            self.reply(404, {"error": "review needs [uncertain] dir and [http] dataset"})
            return
        body = self.json_body()
        stem = body.get("stem")
        try:
            if body.get("discard") is True:
                await self.in_files(frames.discard, stem)
                self.reply(200, {"discarded": stem})
                return
            target = await self.in_files(frames.move, stem, body.get("label"), self.site.labels())
        except (ReviewError, DatasetFolderError) as exc:
            self.reply(404 if "no such frame" in str(exc) else 400, {"error": str(exc)})
            return
        self.reply(200, {"moved": stem, "to": str(target.relative_to(frames.dataset.root))})


class ReviewImage(Handler):
    async def get(self, stem: str) -> None:
        frames = self.site.uncertain()
        if frames is None:
            raise tornado.web.HTTPError(404, reason="review is off")
        try:
            path = frames.image(stem)
            data = await self.in_files(path.read_bytes)
        except (ReviewError, OSError):
            raise tornado.web.HTTPError(404, reason="no such frame") from None
        self.set_header("Content-Type", "image/jpeg")
        self.finish(data)


class Static(tornado.web.StaticFileHandler):
    """The page's script and style sheet (no secrets: served without the token)."""

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-cache")

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log, without the query string, at debug level (the journal is not an access log)."""
    request = handler.request
    log.debug("%d %s %s (%s) %.1f ms", handler.get_status(), request.method, request.path, request.remote_ip,
              1000.0 * request.request_time())


def make_app(site: Site) -> tornado.web.Application:
    args = {"site": site}
    routes = [
        (r"/", LivePage, args), (r"/collect", CollectPage, args), (r"/review", ReviewPage, args),
        (r"/stream\.mjpg", Stream, args), (r"/snapshot\.jpg", Snapshot, args),
        (r"/api/status", Status, args), (r"/api/latest", Latest, args), (r"/api/monitor", MonitorApi, args),
        (r"/api/events", Events, args), (r"/api/collect", CollectApi, args), (r"/api/review", ReviewApi, args),
        (r"/review/frames/([^/]+)\.jpg", ReviewImage, args),
        (r"/healthz", Health, args), (r"/metrics", Metrics, args),
        (r"/static/(edgeclass\.(?:js|css))", Static, {"path": str(STATIC)}),
    ]
    return tornado.web.Application(routes, log_function=_log_request, compress_response=False)


def bind(listen: str) -> list:
    """Listening sockets for ``HOST:PORT`` (in the caller's thread, so a busy port is a clear error at once)."""
    host, port = parse_listen(listen)
    try:
        return tornado.netutil.bind_sockets(port, host, reuse_port=False)
    except OSError as exc:
        raise AccessError(f"[http] listen {listen}: cannot listen there ({exc.strerror or exc}); "
                          "another program may use the port: choose another with --http HOST:PORT") from None


class HttpServer:
    """The Tornado server and its thread: start on construction, :meth:`close` to stop."""

    def __init__(self, listen: str, site: Site) -> None:
        self.site = site
        self.listen = listen
        self._sockets = bind(listen)
        self._loop = asyncio.new_event_loop()
        self._server: tornado.httpserver.HTTPServer | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        from concurrent.futures import ThreadPoolExecutor

        site.files = ThreadPoolExecutor(1, thread_name_prefix="edgeclass-http-files")
        self._thread = threading.Thread(target=self._serve, name="edgeclass-http", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None:
            raise EdgeclassError(f"[http] listen {listen}: the server did not start ({self._failure})")

    @property
    def port(self) -> int:
        return self._sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        host = self._sockets[0].getsockname()[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._start_server(self._sockets)
            self.site.hub.attach(self._loop)
        except BaseException as exc:  # reported by __init__ in the caller's thread
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def _start_server(self, sockets: list) -> tornado.httpserver.HTTPServer:
        server = tornado.httpserver.HTTPServer(make_app(self.site), max_body_size=64 * 1024, xheaders=False)
        server.add_sockets(sockets)
        return server

    def call(self, fn: Callable, timeout: float = 10.0):
        """Run ``fn()`` (a coroutine function or a plain one) in the server's thread and return its result."""
        async def wrapper():
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def relisten(self, listen: str) -> None:
        """Serve on ``listen`` instead; the old address closes only once the new one listens."""
        sockets = bind(listen)
        old = self._server
        self._server = self.call(lambda: self._start_server(sockets))
        self.call(old.stop)
        self._sockets, self.listen = sockets, listen

    def close(self) -> None:
        """Stop listening, end the streams, stop the thread."""
        if not self._thread.is_alive():
            return

        async def shutdown():
            if self._server is not None:
                self._server.stop()
            await self.site.hub.detach()
            await asyncio.sleep(0.05)  # let the streams see the end and finish their responses
            if self._server is not None:
                try:
                    await asyncio.wait_for(self._server.close_all_connections(), 2.0)
                except asyncio.TimeoutError:
                    pass

        try:
            self.call(shutdown, timeout=5.0)
        except Exception as exc:  # stopping must not fail the run's ending
            log.debug("http: shutdown: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        self.site.files.shutdown(wait=False)
