"""``liftcam serve``: the workbench's functions called directly, the routes through FastAPI's test client, and
the page end to end in a real headless Chromium (Debian's ``chromium``, driven by Playwright)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from liftcam.data import sample_photos
from liftcam.errors import LiftCamError
from liftcam.webapp import MAX_UPLOAD_BYTES, UploadError, Workbench, read_upload
from liftcam.webapp.server import create_app

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def workbench() -> Workbench:
    return Workbench()


@pytest.fixture(scope="module")
def client(workbench: Workbench) -> TestClient:
    return TestClient(create_app(workbench))


def test_the_workbench_predicts_and_explains_a_real_photo(workbench: Workbench) -> None:
    cat = workbench.sample("chelsea")
    top = workbench.predict(cat, "efficientnet-lite0")
    assert len(top) == 5 and top[0]["class"] in CAT_CLASSES and top[0]["probability"] > 0.3
    result = workbench.explain(cat, "efficientnet-lite0", "features.16", None, ["lift-cam", "grad-cam"], fidelity=16)
    assert result["class"] == top[0]["class"] and result["layer"] == "features.16"
    panels = {p["method"]: p for p in result["panels"]}
    assert list(panels) == ["lift-cam", "grad-cam"]
    for panel in panels.values():
        assert panel["overlay"].startswith("data:image/png;base64,") and panel["raw"].startswith("data:image/png")
        assert 0 <= panel["average_drop"] <= 100 and panel["increase_in_confidence"] in (0.0, 100.0)
    # the signed layer: LIFT-CAM's coefficients are Shapley values, Grad-CAM's are not
    assert panels["lift-cam"]["shapley_pearson"] > 0.9 and panels["grad-cam"]["shapley_pearson"] < 0.5
    assert panels["lift-cam"]["raw_range"][0] < 0 < panels["lift-cam"]["raw_range"][1]
    # a class by name, and a class out of range
    tabby = workbench.explain(cat, "efficientnet-lite0", None, "tabby", ["grad-cam"])
    assert tabby["class"] == 281 and tabby["layer"] == "features.17"
    with pytest.raises(LiftCamError, match="out of range"):
        workbench.explain(cat, "efficientnet-lite0", None, "1000", ["grad-cam"])
    with pytest.raises(LiftCamError, match="layer"):
        workbench.explain(cat, "efficientnet-lite0", "features.99", None, ["grad-cam"])


def test_any_timm_model_by_name_with_random_weights(workbench: Workbench, client: TestClient) -> None:
    layers = workbench.layers("timm:resnet18")
    assert layers["default"] == "layer4" and {"name": "layer4", "shape": [512, 7, 7]} in layers["layers"]
    result = workbench.explain(workbench.sample("coffee"), "timm:resnet18", None, None, ["lift-cam"])
    assert result["weights"] == "random" and result["panels"][0]["method"] == "lift-cam"
    answer = client.get("/api/layers", params={"model": "timm:no_such_net"})
    assert answer.status_code == 400 and "timm has no model" in answer.json()["error"]


def test_the_download_holds_every_map_and_the_summary(workbench: Workbench) -> None:
    result = workbench.explain(workbench.sample("coffee"), "efficientnet-lite0", None, None, ["lift-cam", "score-cam"])
    with zipfile.ZipFile(io.BytesIO(workbench.download(result["id"]))) as archive:
        names = set(archive.namelist())
        assert {"input.png", "summary.json", "lift-cam.png", "lift-cam_map.npy", "score-cam_raw.npy"} <= names
        heat = np.load(io.BytesIO(archive.read("lift-cam_map.npy")))
        raw = np.load(io.BytesIO(archive.read("lift-cam_raw.npy")))
        summary = json.loads(archive.read("summary.json"))
    assert heat.shape == (224, 224) and float(heat.max()) == pytest.approx(1.0) and raw.shape == (7, 7)
    assert summary["class"] == result["class"] and set(summary["methods"]) == {"lift-cam", "score-cam"}
    with pytest.raises(LiftCamError, match="no longer kept"):
        workbench.download("0" * 32)


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_uploads_get_a_clear_message() -> None:
    with pytest.raises(UploadError, match="not an image"):
        read_upload(b"%PDF-1.4 not an image", "paper.pdf")
    with pytest.raises(UploadError, match="empty"):
        read_upload(b"", "empty.png")
    with pytest.raises(UploadError, match="larger than the 10 MB limit"):
        read_upload(b"\0" * (MAX_UPLOAD_BYTES + 1), "huge.jpg")
    bomb = _png(10_000, 10_000, "1")  # 100 megapixels in a small file
    assert len(bomb) < MAX_UPLOAD_BYTES
    with pytest.raises(UploadError, match="too large"):
        read_upload(bomb, "bomb.png")
    assert read_upload(_png(40, 30), "small.png").size == (40, 30)


def test_routes_answer_json_and_errors_are_400s(client: TestClient) -> None:
    setup = client.get("/api/setup").json()
    assert setup["model"] == "efficientnet-lite0" and "chelsea" in setup["samples"]
    assert setup["models"][0] == {"name": "efficientnet-lite0", "weights": "ImageNet (offline)", "random": False}
    assert any(m["random"] and m["name"] == "resnet18" for m in setup["models"])
    layers = client.get("/api/layers", params={"model": "efficientnet-lite0"}).json()
    assert layers["default"] == "features.17" and {"name": "features.16", "shape": [320, 7, 7]} in layers["layers"]
    photo = sample_photos()["motorcycle"].read_bytes()
    top = client.post("/api/predict", data={"model": "efficientnet-lite0"}, files={"file": ("m.png", photo)}).json()
    assert top["top5"][0]["name"] in ("moped", "motor scooter", "crash helmet", "disk brake")
    explained = client.post(
        "/api/explain", data={"model": "efficientnet-lite0", "sample": "rocket", "methods": "grad-cam"}
    )
    assert explained.status_code == 200 and len(explained.json()["panels"]) == 1
    download = client.get(f"/api/download/{explained.json()['id']}")
    assert download.headers["content-type"] == "application/zip" and download.content[:2] == b"PK"
    for data, files, message in [
        ({"model": "efficientnet-lite0", "methods": "lift-cam"}, {"file": ("x.png", b"junk")}, "not an image"),
        ({"model": "efficientnet-lite0", "methods": "lift-cam"}, None, "choose an image"),
        ({"model": "efficientnet-lite0", "methods": "nope", "sample": "chelsea"}, None, "unknown method"),
        ({"model": "no-such-model", "methods": "grad-cam", "sample": "chelsea"}, None, "no-such-model"),
    ]:
        answer = client.post("/api/explain", data=data, files=files)
        assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    # the server keeps working after the errors
    assert client.post("/api/predict", data={"model": "efficientnet-lite0", "sample": "coffee"}).status_code == 200


def test_requests_beyond_the_queue_are_refused_as_busy(workbench: Workbench) -> None:
    taken = 0
    while workbench._waiting.acquire(blocking=False):  # fill the queue
        taken += 1
    try:
        with pytest.raises(LiftCamError, match="busy"):
            workbench.predict(workbench.sample("coffee"), "efficientnet-lite0")
    finally:
        for _ in range(taken):
            workbench._waiting.release()
    assert workbench.predict(workbench.sample("coffee"), "efficientnet-lite0")[0]["probability"] > 0


# -- the page in a real browser ------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: As root on a machine without network: no sandbox, no background connections (refused, many at a time).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "liftcam", "serve", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(address, timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start: {process.communicate()[1].decode()}") from None
                time.sleep(0.3)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("LIFTCAM_REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (scripts/setup.sh test installs it)",
)
def test_the_page_in_a_real_browser(server: str, tmp_path: Path) -> None:
    """Upload a photo, choose two methods and a layer, see both overlays, download the maps; a bad file gets a
    message on the page and the server goes on. CI requires the browser (``LIFTCAM_REQUIRE_BROWSER``)."""
    assert CHROMIUM is not None, "Debian's chromium is missing: scripts/setup.sh test installs it"
    from playwright import sync_api

    photo = sample_photos()["chelsea"]
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(server)
            page.wait_for_selector("#message:has-text('ready')", timeout=60_000)
            assert page.input_value("#model") == "efficientnet-lite0"
            assert page.input_value("#layer") == "features.17"
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#target option:nth-child(6)", state="attached", timeout=60_000)  # the top 5
            assert "cat" in page.inner_text("#target").lower()
            for box in page.query_selector_all("#methods input:checked"):
                box.uncheck()
            page.check("#methods input[value='lift-cam']")
            page.check("#methods input[value='grad-cam']")
            page.select_option("#layer", "features.16")
            page.click("#explain")
            page.wait_for_selector("#download", state="visible", timeout=120_000)
            overlays = page.query_selector_all("#results img.overlay")
            assert [o.get_attribute("alt") for o in overlays] == ["lift-cam", "grad-cam"]
            assert all(o.evaluate("img => img.complete && img.naturalWidth === 224") for o in overlays)
            assert "features.16" in page.inner_text("#summary")
            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / "maps.zip"
            download.value.save_as(saved)
            with zipfile.ZipFile(saved) as archive:
                assert {"lift-cam.png", "grad-cam_raw.npy", "summary.json"} <= set(archive.namelist())
            # a bad file: a clear message on the page, and the server goes on
            page.set_input_files("#file", str(bad))
            page.click("#explain")
            page.wait_for_selector("#message.error", timeout=60_000)
            assert "not an image" in page.inner_text("#message")
            before = page.inner_text("#summary")
            page.set_input_files("#file", [])
            page.select_option("#sample", "coffee")
            page.click("#explain")
            page.wait_for_function(f"document.querySelector('#summary').textContent !== {json.dumps(before)}")
            assert "espresso" in page.inner_text("#summary") and page.inner_text("#message") == ""
        finally:
            browser.close()


SITE = Path(__file__).resolve().parents[1] / "site" / "index.html"


@pytest.mark.skipif(
    not (SITE.exists() and CHROMIUM) and not os.environ.get("LIFTCAM_REQUIRE_BROWSER"),
    reason="the documentation site is not built (mkdocs build) or chromium is missing",
)
def test_the_documentation_sites_front_page_opens_in_the_browser() -> None:
    """scripts/test.sh builds the site first (mkdocs build --strict); its front page and gallery render."""
    assert CHROMIUM is not None and SITE.exists(), "build the site (mkdocs build) and install chromium first"
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(SITE.as_uri())
            assert page.title().startswith("liftcam")
            assert "LIFT-CAM" in page.inner_text("article")
            page.click("nav >> text=Gallery")
            page.wait_for_selector("article img[alt^='lift-cam on']")
            loaded = page.eval_on_selector_all("article img", "imgs => imgs.filter(i => i.naturalWidth > 0).length")
            assert loaded >= 3 * 20  # every method on three photos
        finally:
            browser.close()
