"""The pages in a real headless Chromium (Debian's ``chromium``): live, collect and review, as a person uses them."""

from __future__ import annotations

import time

import numpy as np
import pytest

from .cdp import chromium, chromium_path
from .http_helpers import GREY, colour_cycle_video, scene_change_video, serving, wait_for
from .test_review import _saved

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """Half a second of each colour, over and over: the scene changes, and so must the label on the page."""
    return colour_cycle_video(tmp_path_factory.mktemp("browser") / "cycle.avi", per_colour=15)


def _png(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a PNG"
    return image[:, :, ::-1]


def _stayed_home(page, url: str) -> None:
    outside = [r for r in page.requests if not (r.startswith(url + "/") or r.startswith(("data:", "about:")))]
    assert page.requests and outside == []


def test_live_page_shows_the_camera_and_the_label_follows_the_scene(colour_bundle, video):
    with serving(video, colour_bundle) as s, chromium() as page:
        page.open(s.url + "/")
        first = page.wait_for("document.getElementById('label').textContent")
        assert first in ("red", "green", "blue")
        seen = {first}
        deadline = time.monotonic() + 8
        while len(seen) < 3 and time.monotonic() < deadline:
            seen.add(page.evaluate("document.getElementById('label').textContent"))
            time.sleep(0.1)
        assert seen == {"red", "green", "blue"}  # the text changed with the scene, without reloading the page
        page.wait_for("document.getElementById('stream').naturalWidth === 160")
        rect = page.evaluate("(() => { const r = document.getElementById('stream').getBoundingClientRect();"
                             " return [r.x, r.y, r.width, r.height]; })()")
        shot = _png(page.screenshot())
        x, y, w, h = (int(v) for v in rect)
        camera = shot[y + 5: y + h - 5, x + 5: x + w - 5].astype(float)
        assert camera.std() > 10  # a real frame with texture, not a blank box
        assert camera.reshape(-1, 3).mean(axis=0).max() > 120  # strongly one of the scene's colours
        assert (np.abs(shot.astype(int) - (255, 212, 0)).sum(axis=2) < 60).sum() > 200  # the crop outline is drawn
        fps = page.wait_for("parseFloat(document.getElementById('fps').textContent) > 0 && "
                            "document.getElementById('fps').textContent")
        # A live figure, and no faster than the 30 fps video it is paced by (how fast this machine is, is for bench).
        assert 0 < float(fps) < 60
        _stayed_home(page, s.url)


def test_live_page_raises_and_clears_the_confidence_alarm(colour_bundle, tmp_path):
    """Red (the model is sure), grey (unsure: the scene changed), red again, with a 2 s monitor window.

    The page loads with the alarm hidden; the script shows it while grey
    fills the window and hides it once the deployed scene is back, without
    reloading. The grey and red phases outlast the script's 5 s poll.
    """
    video = scene_change_video(tmp_path / "scene.avi", [("red", 4.0), (GREY, 8.0), ("red", 12.0)], fps=10.0)
    alarm = "document.getElementById('alarm')"
    shown = f"!{alarm}.hidden && {alarm}.getBoundingClientRect().height > 0"
    with chromium() as page, serving(video, colour_bundle, monitor_window=2.0) as s:  # the browser is up first
        page.open(s.url + "/")
        assert not s.loop.monitor.snapshot(time.monotonic())["confidence_dropped"], "the page loaded after the change"
        assert page.evaluate(f"{alarm}.hidden") is True  # the first HTML: the model is sure of the deployed scene
        page.wait_for(shown, timeout=30)
        assert "confidence has dropped" in page.evaluate(f"{alarm}.textContent")
        baseline = s.loop.monitor.snapshot(time.monotonic())["baseline_top_score"]
        assert baseline > 0.95  # the first window was the red scene
        # The figure shown beside the alarm is below the baseline by more than the monitor's drop (0.15).
        assert float(page.evaluate("document.getElementById('mean-top').textContent")) < baseline - 0.15 + 0.01
        page.wait_for(f"{alarm}.hidden", timeout=30)  # red again: the confidence is back, the alarm goes away
        assert float(page.evaluate("document.getElementById('mean-top').textContent")) > baseline - 0.15 - 0.01
        _stayed_home(page, s.url)


def test_collect_page_buttons_and_keys_save_photos(video, tmp_path):
    with serving(video, None, dataset=tmp_path / "ds", labels=("red", "green", "blue")) as s, chromium() as page:
        page.open(s.url + "/collect")
        page.wait_for("document.getElementById('stream').naturalWidth === 160")
        page.click('button.save[data-label="red"]')
        wait_for(lambda: list((tmp_path / "ds" / "red").glob("*.jpg")))
        page.press("3")  # the third button's key: blue
        wait_for(lambda: list((tmp_path / "ds" / "blue").glob("*.jpg")))
        page.wait_for("document.querySelector('button.save[data-label=\"blue\"] .count').textContent === '1'")
        page.evaluate("document.getElementById('burst').checked = true;"
                      "document.getElementById('burst-count').value = '3';"
                      "document.getElementById('burst-interval').value = '0.1'")
        page.click('button.save[data-label="green"]')
        wait_for(lambda: len(list((tmp_path / "ds" / "green").glob("*.jpg"))) == 3)
        page.wait_for("document.getElementById('saved').textContent.startsWith('saved green/')")
        _stayed_home(page, s.url)
    assert sorted(len(list((tmp_path / "ds" / c).glob("*.jpg"))) for c in ("red", "green", "blue")) == [1, 1, 3]


def test_review_page_sorts_and_discards_with_a_click(colour_bundle, video, tmp_path):
    stems = _saved(tmp_path / "u", 2)
    with serving(video, colour_bundle, dataset=tmp_path / "ds", uncertain_dir=tmp_path / "u") as s, chromium() as page:
        page.open(s.url + "/review")
        assert page.evaluate("document.querySelectorAll('figure.card').length") == 2
        page.wait_for("[...document.querySelectorAll('figure.card img')].every(i => i.naturalWidth === 160)")
        page.click(f'figure.card[data-stem="{stems[0]}"] button.sort[data-label="green"]')
        wait_for(lambda: (tmp_path / "ds" / "green" / f"{stems[0]}.jpg").exists())
        page.wait_for("document.querySelectorAll('figure.card').length === 1")  # the sorted card left the page
        page.click(f'figure.card[data-stem="{stems[1]}"] button.discard')
        page.wait_for("document.querySelectorAll('figure.card').length === 0")
        _stayed_home(page, s.url)
    assert not list((tmp_path / "u").iterdir())
    assert sorted(p.name for p in (tmp_path / "ds" / "green").iterdir()) == sorted([f".{stems[0]}.json", f"{stems[0]}.jpg"])
