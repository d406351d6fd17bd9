"""The dashboard in a real headless Chromium against a real server on 127.0.0.1.

What a user sees: the page loads without console errors and lists the models; the request
counter moves after requests without a reload; the demo model runs from one click (and from the
keyboard) and shows its label; load/unload work with and without an API key, and the key never
appears in a URL; the page reconnects after the server restarts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from PIL import Image

from tests.dashboard.conftest import ARTIFACTS, Page
from tests.server import conftest as server_conftest
from tests.server.conftest import ServerProcess, build_repo
from tests.server.models import linear_reference
from ziggurat.server.cli import demo_model_path

KEY = "dash-secret-key-1"
ROOT = Path(__file__).resolve().parents[2]
# Predicates are functions, not expressions: the page's CSP forbids eval of a string.
REQUESTS = "document.querySelector('[data-metric=requests]').textContent"


def _infer(url: str, n: int, headers: dict | None = None) -> None:
    body = {"inputs": [{"name": "image", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]}
    for _ in range(n):
        r = httpx.post(url + "/v2/models/digits/infer", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess(str(demo_model_path()), "--no-access-log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0


@pytest.fixture
def page(browser, server):
    p = Page(browser, server.url)
    yield p
    p.close()


def _live(p: Page) -> None:
    p.page.wait_for_selector('#conn[data-state="live"]')


def test_page_loads_lists_models_and_is_screenshotted(page, server, record_property):
    page.open("/")
    _live(page)
    row = page.page.locator('tr[data-model="digits"]')
    assert row.locator('[data-metric="state"]').inner_text() == "READY"
    text = row.inner_text()
    for part in ("image FP32 [?, 64]", "probabilities FP32 [?, 10]", "cpu", "fp32", "10.0 KiB"):
        assert part in text
    # The charts have drawn their axes once the first samples arrived.
    page.page.wait_for_selector('[data-chart="rps"] line.axis', state="attached")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    _infer(server.url, 5)
    page.page.get_by_role("button", name="Try the demo model with a sample digit").click()
    page.page.wait_for_selector('[data-output="label"]')
    page.page.screenshot(path=str(shot), full_page=True)
    record_property("screenshot", str(shot))
    print(f"dashboard screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert page.errors == []


def test_requests_figure_updates_without_reload(page, server):
    page.open("/dashboard")
    _live(page)
    fig = page.page.locator('[data-metric="requests"]')
    page.page.wait_for_function(f"() => {REQUESTS} !== '–'")
    before = int(fig.inner_text())
    navigations = []
    page.page.on("framenavigated", lambda f: navigations.append(f.url))
    _infer(server.url, 3)
    page.page.wait_for_function(f"n => Number({REQUESTS}) >= n", arg=before + 3)
    row = page.page.locator('tr[data-model="digits"] [data-metric="model-requests"]')
    assert int(row.inner_text()) >= 3
    assert navigations == []  # pushed by the server, not a reload
    assert page.errors == []


def test_try_the_demo_model_by_keyboard_shows_its_label(page):
    page.open("/")
    demo = page.page.get_by_role("button", name="Try the demo model with a sample digit")
    demo.focus()
    page.page.keyboard.press("Enter")
    label = page.page.locator('[data-output="label"]')
    label.wait_for()
    assert label.locator(".values").inner_text() == "3"  # the sample is a handwritten 3
    top = page.page.locator('[data-output="probabilities"] .topk li').first.inner_text()
    assert top.startswith("class 3: ")
    assert "ms round trip" in page.page.locator('[data-metric="try-latency"]').inner_text()
    # The form was generated from the metadata: a JSON box and an image upload for 8x8 pixels.
    assert page.page.get_by_label("image values (JSON, row-major)").input_value().startswith("[0,")
    assert "Resized to 8×8" in page.page.locator(".image-field .note").inner_text()
    assert page.errors == []


def _unload_then_load(p: Page) -> None:
    row = p.page.locator('tr[data-model="digits"]')
    row.get_by_role("button", name="Unload digits version 1").click()
    p.page.wait_for_selector('tr[data-model="digits"] [data-metric="state"]:text("UNAVAILABLE")')
    assert p.page.locator("#action-status").inner_text() == "digits: unloaded"
    assert row.get_by_role("button", name="Unload digits version 1").count() == 0
    row.get_by_role("button", name="Load digits").click()
    p.page.wait_for_selector('tr[data-model="digits"] [data-metric="state"]:text-is("READY")')
    assert p.page.locator("#action-status").inner_text() == "digits: ready"
    status = p.page.locator("#action-status")
    row.get_by_role("button", name="Reload digits version 1").click()
    p.page.locator('#action-status:text-is("Reloading digits…")').wait_for(state="detached")
    assert status.inner_text() == "digits: ready"


def test_unload_and_load_without_a_key(page):
    page.open("/")
    _live(page)
    _unload_then_load(page)
    assert page.errors == []


def test_unload_and_load_with_a_key(browser, tmp_path):
    srv = ServerProcess(str(demo_model_path()), "--no-access-log", "--api-key", KEY)
    p = None
    try:
        srv.wait_ready()
        p = Page(browser, srv.url)
        p.open("/")
        dialog = p.page.get_by_role("dialog", name="API key")
        dialog.wait_for()
        dialog.get_by_role("button", name="Cancel").click()  # no key: no more prompts
        p.page.locator('#conn:text("an API key is needed")').wait_for()
        assert not dialog.is_visible()
        p.page.get_by_role("button", name="API key").click()
        dialog.wait_for()
        dialog.get_by_label("API key").fill("not-the-key")
        dialog.get_by_role("button", name="Use key").click()
        dialog.wait_for()  # refused: asked again
        assert "refused" in p.page.locator("#key-why").inner_text()
        dialog.get_by_label("API key").fill(KEY)
        dialog.get_by_label("API key").press("Enter")
        _live(p)
        _unload_then_load(p)
        stored = p.page.evaluate("sessionStorage.getItem('ziggurat-api-key')")
        assert stored == KEY
        assert p.urls and not [u for u in p.urls if KEY in u]
        # Only the expected refusals (no key, then the wrong key) reached the console.
        assert all("401" in e or "403" in e for e in p.errors), p.errors
    finally:
        if p is not None:
            p.close()
        assert srv.stop() == 0


def test_page_reconnects_after_a_server_restart(browser, tmp_path, monkeypatch):
    model = tmp_path / "digits.onnx"
    shutil.copy(demo_model_path(), model)
    srv = ServerProcess(str(model), "--no-access-log")
    port = srv.port
    p = None
    try:
        srv.wait_ready()
        p = Page(browser, srv.url)
        p.open("/")
        _live(p)
        _infer(srv.url, 2)
        p.page.wait_for_function(f"() => Number({REQUESTS}) >= 2")
        assert srv.stop() == 0  # the open stream does not hold the shutdown
        p.page.wait_for_selector('#conn:not([data-state="live"])')
        monkeypatch.setattr(server_conftest, "free_port", lambda: port)  # the same address
        srv = ServerProcess(str(model), "--no-access-log")
        srv.wait_ready()
        # A new server counts from zero: the page follows it instead of keeping the old count.
        _live(p)
        p.page.wait_for_function(f"() => {REQUESTS} === '0'")
    finally:
        if p is not None:
            p.close()
        srv.stop()


def _sample_digit() -> list[float]:
    samples = json.loads((ROOT / "src/ziggurat/server/dashboard/samples.json").read_text())
    return samples["digits"]["inputs"]["image"]["data"]


def test_image_upload_is_laid_out_and_scaled_as_stated(page, tmp_path):
    """An 8x8 picture of the sample digit, dark ink on white: the page inverts it and scales
    it to the 0..16 its description states; values come back to within 8-bit rounding."""
    ink = np.asarray(_sample_digit(), np.float64).reshape(8, 8)
    gray = np.round(255 - ink * 255 / 16).astype(np.uint8)
    png = tmp_path / "three.png"
    Image.fromarray(gray, "L").convert("RGB").save(png)
    page.open("/")
    _live(page)
    sent = []
    page.page.on(
        "request", lambda r: sent.append(r.post_data) if r.url.endswith("/infer") else None
    )
    page.page.get_by_label("image from an image").set_input_files(str(png))
    assert page.page.get_by_label("use the image instead of the values").is_checked()
    assert "scaled to 0..16" in page.page.locator(".image-field .note").inner_text()
    page.page.get_by_role("button", name="Run").click()
    page.page.locator('[data-output="label"] .values:text-is("3")').wait_for()
    tensor = json.loads(sent[-1])["inputs"][0]
    assert tensor["shape"] == [1, 64] and tensor["datatype"] == "FP32"
    # One 8-bit step of the picture is 16/255 of the model's scale; rounding is half a step.
    np.testing.assert_allclose(tensor["data"], ink.ravel(), rtol=0, atol=0.5 * 16 / 255 + 1e-9)
    assert page.errors == []


def test_top_k_carries_the_labels_of_the_model_metadata(browser, tmp_path):
    model = onnx.load(str(demo_model_path()))
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    onnx.helper.set_model_props(model, {"labels": json.dumps(names)})
    onnx.save(model, str(tmp_path / "digits.onnx"))
    srv = ServerProcess(str(tmp_path / "digits.onnx"), "--no-access-log")
    p = None
    try:
        srv.wait_ready()
        p = Page(browser, srv.url)
        p.open("/")
        p.page.get_by_role("button", name="Try the demo model with a sample digit").click()
        top = p.page.locator('[data-output="probabilities"] .topk li').first
        top.wait_for()
        assert top.inner_text().startswith("three (class 3): ")
        assert p.page.locator('[data-output="label"] .values').inner_text() == "3 (three)"
        assert p.errors == []
    finally:
        if p is not None:
            p.close()
        assert srv.stop() == 0


def test_a_repository_every_version_and_forms_for_numbers_and_text(browser, tmp_path):
    repo = build_repo(tmp_path / "repo")
    srv = ServerProcess(str(repo), "--no-access-log", "--model-cache-size", "20")
    p = None
    try:
        srv.wait_ready()
        p = Page(browser, srv.url)
        p.open("/")
        _live(p)
        for name, version in (("versioned", "2"), ("linear", "1"), ("batched", "1")):
            row = p.page.locator(f'tr[data-model="{name}"][data-version="{version}"]')
            assert row.locator('[data-metric="state"]').inner_text() == "READY"
        bad = p.page.locator('tr[data-model="corrupt"] [data-metric="state"]').inner_text()
        assert bad.startswith("UNAVAILABLE (model 'corrupt' version 1 failed to load")
        # Numbers: a JSON box and its shape; the values shown are the model's, to 5 digits.
        p.page.get_by_label("Model", exact=True).select_option("linear/1")
        p.page.get_by_label("x values (JSON, row-major)").fill("[[1.5, -2, 3.25, 4]]")
        p.page.get_by_role("button", name="Run").click()
        shown = p.page.locator('[data-output="y"] .values').inner_text()
        want, label = linear_reference(np.array([[1.5, -2, 3.25, 4]], np.float32))
        # toPrecision(5): each value rounded to 5 significant digits, half a unit in the last.
        np.testing.assert_allclose([float(v) for v in shown.split(", ")], want[0], rtol=5e-5)
        label_text = p.page.locator('[data-output="label"] .values').inner_text()
        assert label_text == str(label[0])
        # Text: a string tensor gets a text box, one item a line.
        p.page.get_by_label("Model", exact=True).select_option("strings/1")
        p.page.get_by_label("x (text, one item a line)").fill("hello\nwörld")
        p.page.get_by_role("button", name="Run").click()
        out = p.page.locator('[data-output="out"] .values')
        out.wait_for()
        assert out.inner_text() == "hello, wörld"
        # Bad JSON is reported on the page, not sent.
        p.page.get_by_label("Model", exact=True).select_option("linear/1")
        p.page.get_by_label("x values (JSON, row-major)").fill("[[1, 2,")
        p.page.get_by_role("button", name="Run").click()
        assert "x: the values are not JSON" in p.page.locator("#try-outputs .error").inner_text()
        assert p.errors == []
    finally:
        if p is not None:
            p.close()
        assert srv.stop() == 0
