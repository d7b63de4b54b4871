"""The HTTP output on 127.0.0.1: every endpoint through a real client, a real frame loop and model behind it."""

from __future__ import annotations

import http.client
import json
import re
import time

import numpy as np
import pytest

from edgeclass.device.outputs.http.access import Access, AccessError, access_for, parse_listen, read_token
from edgeclass.device.bundle import load_bundle, write_bundle
from edgeclass.device.pipeline.loop import StatusHook
from edgeclass.device.pipeline.preprocess import Preprocessor, crop_box
from edgeclass.device.pipeline.verify import verify_bundle
from edgeclass.device.service.supervise import Liveness, Supervisor
from edgeclass.device.service.systemd import Watchdog

from .conftest import colour_frame
from .http_helpers import GREY, colour_cycle_video, free_port, request, scene_change_video, serving, wait_for

TOKEN = "s3cret-token-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def cycle_video(tmp_path_factory):
    """10 frames each of red, green, blue at 160x120, played at 30 fps: the answer changes every third of a second."""
    return colour_cycle_video(tmp_path_factory.mktemp("http") / "cycle.avi")


def _parts(url: str, count: int, timeout: float = 10.0) -> list[tuple[dict, bytes]]:
    """The first ``count`` parts of a multipart/x-mixed-replace stream, each with its own headers."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("GET", "/" + url.split("/", 3)[3])
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
    parts = []
    while len(parts) < count:
        line = response.fp.readline()
        assert line, "the stream ended early"
        if line.strip() != b"--frame":
            continue
        headers = {}
        while (line := response.fp.readline().strip()):
            key, value = line.decode().split(":", 1)
            headers[key.strip().lower()] = value.strip()
        parts.append((headers, response.fp.read(int(headers["content-length"]))))
    conn.close()
    return parts


def _decode(jpeg: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image[:, :, ::-1]


def test_live_page_first_html_holds_the_answer_and_the_crop(colour_bundle, cycle_video, tmp_path):
    with serving(cycle_video, colour_bundle, dataset=tmp_path / "ds", uncertain_dir=tmp_path / "u") as s:
        wait_for(lambda: s.loop.latest is not None)
        reply = request(s.url + "/")
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
        html = reply.text
        label = re.search(r'<div id="label" class="label">([^<]*)</div>', html).group(1)
        score = float(re.search(r'<span id="score">([0-9.]+)</span>', html).group(1))
        assert label in ("red", "green", "blue") and score > 0.9  # without any script running
        # The model sees the centre 120x120 of a 160x120 frame (32x32 input, centre crop): outlined as such.
        top, left, h, w = crop_box(120, 160, 32, 32)
        assert f'<rect id="crop-box" x="{left}" y="{top}" width="{w}" height="{h}"' in html and (left, w) == (20, 120)
        assert 'href="/collect"' in html and 'href="/review"' in html
        assert "cpu (ai_edge_litert)" in html and ">bundle<" in html
        # Everything the page loads comes from the device itself.
        assert not re.search(r'(src|href)="(https?:)?//', html)
        assert "default-src 'self'" in reply.headers["content-security-policy"]


def test_api_status_latest_and_monitor(colour_bundle, cycle_video):
    with serving(cycle_video, colour_bundle) as s:
        wait_for(lambda: s.loop.stats.frames >= 5)
        status = request(s.url + "/api/status").json()
        assert set(s.loop.status()) == set(status)  # one builder: the loop's status, as the state file has it
        assert status["frames"] >= 5 and status["resolution"] == "160x120" and status["backend"] == "cpu"
        assert status["interpreter"] == "ai_edge_litert" and status["model"] == "model.tflite"
        assert status["bundle_name"] == "bundle" and status["source"].startswith("video file")
        latest = request(s.url + "/api/latest").json()
        assert latest["label"] in ("red", "green", "blue") and latest["score"] > 0.9
        assert [t["label"] for t in latest["top_k"]][0] == latest["label"] and len(latest["top_k"]) == 3
        assert latest["frame_size"] == [160, 120] and latest["crop"] == [20, 0, 120, 120]
        monitor = request(s.url + "/api/monitor").json()
        assert monitor["uncertain_rate"] == 0.0 and monitor["mean_top_score"] > 0.9
        assert sum(monitor["decisions_total"].values()) >= 5


def test_events_are_one_per_decision_change(colour_bundle, cycle_video):
    with serving(cycle_video, colour_bundle) as s:
        conn = http.client.HTTPConnection("127.0.0.1", s.http.port, timeout=10)
        conn.request("GET", "/api/events")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        events = []
        while len(events) < 5:
            line = response.fp.readline().decode()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
        conn.close()
    labels = [e["label"] for e in events]
    assert events[0]["event"] == "latest" and all(e["event"] == "change" for e in events[1:])
    assert all(a != b for a, b in zip(labels, labels[1:])), labels  # every event is a change
    assert set(labels) == {"red", "green", "blue"}


def test_mjpeg_stream_and_snapshot(colour_bundle, cycle_video):
    with serving(cycle_video, colour_bundle) as s:
        parts = _parts(s.url + "/stream.mjpg", 3)
        for headers, body in parts:
            assert headers["content-type"] == "image/jpeg" and int(headers["content-length"]) == len(body)
            assert _decode(body).shape == (120, 160, 3)
        snap = request(s.url + "/snapshot.jpg")
        assert snap.status == 200 and snap.headers["content-type"] == "image/jpeg"
        rgb = _decode(snap.body)
        assert rgb.shape == (120, 160, 3) and rgb.std() > 5  # a real frame, not a blank one
        assert max(rgb[..., c].mean() for c in range(3)) > 150  # one of the strong class colours


def test_jpeg_only_while_watched_and_at_the_capped_rate(colour_bundle, cycle_video):
    with serving(cycle_video, colour_bundle, stream_fps=4.0) as s:
        time.sleep(1.0)
        assert s.http.hub.encoded == 0  # 30 frames a second arrived, nobody watched: nothing encoded
        started = time.monotonic()
        parts = _parts(s.url + "/stream.mjpg", 6)
        elapsed = time.monotonic() - started
        assert len(parts) == 6 and elapsed >= 1.0  # 6 frames at no more than 4 a second take at least 1.25 s
        time.sleep(0.5)
        after = s.http.hub.encoded
        time.sleep(1.0)
        assert s.http.hub.encoded == after  # the viewer left: encoding stopped again


class _Stalled(StatusHook):
    def __init__(self):
        self.ok = True

    def healthy(self, now):
        return self.ok


def test_healthz_follows_the_loops_health_hook(colour_bundle, cycle_video):
    hook = _Stalled()
    with serving(cycle_video, colour_bundle, hooks=[hook]) as s:
        assert request(s.url + "/healthz").status == 200
        hook.ok = False
        reply = request(s.url + "/healthz")
        assert reply.status == 503 and reply.text == "unhealthy\n"
        assert "edgeclass_healthy 0" in request(s.url + "/metrics").text


def test_healthz_is_the_watchdogs_liveness(colour_bundle, tmp_path):
    """Frames every 0.5 s against a 0.2 s grace: the supervisor's Liveness goes quiet between frames, and so does /healthz."""
    video = colour_cycle_video(tmp_path / "slow.avi", per_colour=2)
    supervisor = Supervisor(watchdog=Watchdog(None), liveness=Liveness(0.2, time.monotonic()))
    with serving(video, colour_bundle, fps=2.0) as s:
        s.loop.outputs.append(supervisor)
        supervisor.start(s.loop)  # what the service's Runner does: the supervisor is the run's status hook
        seen = set()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and len(seen) < 2:
            seen.add(request(s.url + "/healthz").status)
            time.sleep(0.05)
        assert seen == {200, 503}
        status = request(s.url + "/api/status").json()
        assert status["pid"] > 0 and "last_error" in status  # the service's own keys, through the same hook


def test_metrics_are_valid_prometheus_text(colour_bundle, cycle_video):
    from prometheus_client.parser import text_string_to_metric_families

    with serving(cycle_video, colour_bundle) as s:
        wait_for(lambda: s.loop.stats.frames >= 40)  # past a colour change
        reply = request(s.url + "/metrics")
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(reply.text)}
        frames = families["edgeclass_frames"]
        assert frames.type == "counter" and frames.samples[0].name == "edgeclass_frames_total"
        assert frames.samples[0].value >= 40
        assert families["edgeclass_dropped_frames"].type == "counter"
        assert families["edgeclass_reopens"].samples[0].value == 0
        latency = families["edgeclass_latency_seconds"]
        assert latency.type == "histogram"
        buckets = [x for x in latency.samples if x.name.endswith("_bucket")]
        assert [b.labels["le"] for b in buckets][-1] == "+Inf"
        counts = [b.value for b in buckets]
        assert counts == sorted(counts) and counts[-1] >= 40
        decisions = {x.labels["label"]: x.value for x in families["edgeclass_decisions"].samples}
        assert set(decisions) == {"red", "green", "blue", "unknown"} and decisions["red"] > 0 and decisions["green"] > 0
        assert families["edgeclass_uncertain_ratio"].samples[0].value == 0.0
        assert "edgeclass_mqtt_connected" not in families  # no MQTT output in this run


def _top_score(bundle, frame) -> float:
    """The model's top score for one frame, through the device's own preprocessing and interpreter."""
    loaded, classifier, _ = verify_bundle(bundle)
    return float(classifier.scores(Preprocessor(loaded.input)(frame)).max())


def _monitor_metrics(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(request(url + "/metrics").text)}
    return {
        "dropped": families["edgeclass_confidence_dropped"].samples[0].value,
        "mean_top": families["edgeclass_mean_top_score"].samples[0].value,
        "uncertain": families["edgeclass_uncertain_ratio"].samples[0].value,
        "rates": {x.labels["label"]: x.value for x in families["edgeclass_label_rate_per_minute"].samples},
    }


def test_metrics_and_first_html_raise_the_confidence_alarm_when_the_scene_changes(colour_bundle, tmp_path):
    """Red for 3 s (the model is sure), then grey (no class's hue: it is unsure), with a 2 s monitor window.

    The first full window (red) is the baseline; once grey fills the window the
    mean top score has fallen far below it, and /metrics and the page say so.
    """
    video = scene_change_video(tmp_path / "scene.avi", [("red", 3.0), (GREY, 8.0)], fps=10.0)
    red, grey = _top_score(colour_bundle, colour_frame("red")), _top_score(colour_bundle, colour_frame(GREY))
    assert red > 0.95 and grey < 0.4  # the two scenes really are sure and unsure for this model
    with serving(video, colour_bundle, monitor_window=2.0) as s:
        before = _monitor_metrics(s.url)
        assert before["dropped"] == 0 and abs(before["mean_top"] - red) < 0.02 and before["uncertain"] == 0.0
        assert set(before["rates"]) == {"red"} and before["rates"]["red"] > 0
        assert '<p id="alarm" class="alarm" hidden>' in request(s.url + "/").text

        def grey_window():
            m = _monitor_metrics(s.url)
            return m if m["dropped"] == 1 and set(m["rates"]) == {"unknown"} else None

        after = wait_for(grey_window, timeout=30, every=0.2)

        def same_window():  # /metrics between two readings of the monitor that saw the same frames
            first = request(s.url + "/api/monitor").json()
            m = _monitor_metrics(s.url)
            second = request(s.url + "/api/monitor").json()
            same = first["frames_in_window"] == second["frames_in_window"] and set(m["rates"]) == {"unknown"}
            return (m, second) if same else None

        during, monitor = wait_for(same_window, timeout=10, every=0.05)
        html = request(s.url + "/").text
    assert abs(monitor["baseline_top_score"] - red) < 0.02  # the baseline is the red scene
    assert abs(after["mean_top"] - grey) < 0.02 and after["uncertain"] == 1.0
    # Decisions per minute over the window: every frame in the 2 s window was "unknown".
    assert during["rates"]["unknown"] == round(monitor["frames_in_window"] * 60 / 2.0, 2)
    assert 0 < monitor["frames_in_window"] <= 2.0 * 10 + 1  # no more than the video's 10 fps fill a window
    assert '<p id="alarm" class="alarm">The model\'s confidence has dropped' in html  # right without JavaScript


def test_live_page_shows_the_bundles_accuracy(colour_bundle, cycle_video, tmp_path):
    """A bundle whose bundle.json carries the metrics section ``edgeclass convert`` writes (see convert/compare.py)."""
    loaded = load_bundle(colour_bundle)
    metrics = {"int8_accuracy": 0.931034, "float_accuracy": 0.944828, "agreement": 0.972414, "drop_pp": 1.379,
               "compared": "int8 TFLite vs float Keras", "split": "test", "test_images": 145}
    measured = write_bundle(tmp_path / "measured", model=colour_bundle / "model.tflite", labels=list(loaded.labels),
                            input_spec=loaded.input, output_spec=loaded.output, name="colours", metrics=metrics)
    float_only = write_bundle(tmp_path / "float", model=colour_bundle / "model.tflite", labels=list(loaded.labels),
                              input_spec=loaded.input, output_spec=loaded.output, name="colours-float",
                              metrics={"float_accuracy": 0.9, "float_tflite_accuracy": 0.9})
    with serving(cycle_video, measured) as s:
        html = request(s.url + "/").text
    assert '<dd id=accuracy>int8 93.1% (float 94.5%)</dd>' in html and ">colours<" in html
    with serving(cycle_video, float_only) as s:
        assert '<dd id=accuracy>90.0%</dd>' in request(s.url + "/").text
    # The section as convert's own comparison builds it, from this model's real answers on 35 labelled frames:
    # 30 of one class colour each, and 5 yellow frames labelled blue, which it gets wrong. There is no Keras
    # model here, so the reference ("float") scores are the same model's.
    from edgeclass.convert.compare import compare

    _, classifier, _ = verify_bundle(colour_bundle)
    preprocess = Preprocessor(loaded.input)
    named = [(c, c) for c in ("red", "green", "blue") for _ in range(10)] + [((255, 255, 0), "blue")] * 5
    scores = np.stack([classifier.scores(preprocess(colour_frame(c, seed=i))) for i, (c, _) in enumerate(named)])
    truth = [list(loaded.labels).index(label) for _, label in named]
    convert_metrics = compare(loaded.labels, truth, {"float": scores, "int8": scores}).metrics()
    assert convert_metrics["int8_accuracy"] == round(30 / 35, 6)
    compared = write_bundle(tmp_path / "compared", model=colour_bundle / "model.tflite", labels=list(loaded.labels),
                            input_spec=loaded.input, output_spec=loaded.output, metrics=convert_metrics)
    with serving(cycle_video, compared) as s:
        assert '<dd id=accuracy>int8 85.7% (float 85.7%)</dd>' in request(s.url + "/").text
    with serving(cycle_video, colour_bundle) as s:  # a bundle made without measuring: said so, not guessed
        assert '<dd id=accuracy>not recorded</dd>' in request(s.url + "/").text


@pytest.fixture()
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def test_token_refused_and_accepted(colour_bundle, cycle_video, token_file):
    with serving(cycle_video, colour_bundle, access=access_for("127.0.0.1:0", token_file)) as s:
        for path in ("/", "/api/status", "/api/latest", "/metrics", "/snapshot.jpg", "/stream.mjpg", "/api/events"):
            refused = request(s.url + path)
            assert refused.status == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert request(s.url + path, headers={"Authorization": "Bearer wrong-token-of-some-length"}).status == 401
            assert request(s.url + path + "?token=" + TOKEN[:-1] + "X").status == 401
        assert request(s.url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
        assert request(s.url + "/api/status?token=" + TOKEN).status == 200
        assert request(s.url + "/metrics", headers={"Authorization": f"bearer {TOKEN}"}).status == 200
        # A page opened with the link carries the token to its stream and links (the browser sends no header).
        page = request(s.url + "/?token=" + TOKEN).text
        assert f'src="/stream.mjpg?token={TOKEN}"' in page
        assert request(s.url + "/healthz").status == 200  # health and the script are open: they reveal nothing
        assert request(s.url + "/static/edgeclass.js").status == 200


def test_posts_need_json_from_the_same_origin(colour_bundle, cycle_video, tmp_path):
    with serving(cycle_video, colour_bundle, dataset=tmp_path / "ds") as s:
        form = request(s.url + "/api/collect", method="POST", body=b"label=red",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status == 415
        foreign = request(s.url + "/api/collect", method="POST", body={"label": "red"},
                          headers={"Origin": "http://evil.example"})
        assert foreign.status == 403
        assert not (tmp_path / "ds" / "red").exists()
        same = request(s.url + "/api/collect", method="POST", body={"label": "red"},
                       headers={"Origin": s.url})
        assert same.status == 200 and len(list((tmp_path / "ds" / "red").glob("*.jpg"))) == 1


def test_reconfigure_moves_the_listener_in_place(colour_bundle, cycle_video, tmp_path, token_file):
    from edgeclass.device.service.config import DeviceConfig, build

    with serving(cycle_video, colour_bundle) as s:
        old = s.url
        port = free_port()
        config = build({"http": {"listen": f"127.0.0.1:{port}", "token_file": token_file}})
        assert isinstance(config, DeviceConfig) and s.http.reconfigure(config)
        new = f"http://127.0.0.1:{port}"
        assert s.http.port == port
        assert request(new + "/api/status").status == 401  # the new token applies
        assert request(new + "/api/status?token=" + TOKEN).status == 200
        with pytest.raises(OSError):
            request(old + "/api/status", timeout=2)


def test_listen_addresses_and_tokens(tmp_path):
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen(":8080") == ("0.0.0.0", 8080)
    for bad in ("localhost", "host:99999", "::1:80", "host:port"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    assert access_for("localhost:8080", None).required is False
    with pytest.raises(AccessError, match=r"\[http\] listen 0\.0\.0\.0:8080: reachable from other machines.*token_file"):
        access_for("0.0.0.0:8080", None)
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(AccessError, match="short: the token must be one word of at least 16"):
        read_token(short)
    with pytest.raises(AccessError, match="no such token file"):
        read_token(tmp_path / "missing")
    access = Access(TOKEN)
    assert access.allows(f"Bearer {TOKEN}", None) and access.allows(None, TOKEN)
    assert not access.allows(None, None) and not access.allows("Basic abc", TOKEN[:-1])
