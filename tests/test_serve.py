"""`kerasae serve`: the JSON API on every shipped entry and on a user's zoo of the other families,
its answers against the models' own, bad requests, and the page in a real browser (Debian's
Chromium driven by Playwright): a drawn digit reconstructed as that digit, sliders, the 2-D map,
touch strokes, every entry's page without console errors."""

import base64
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import REQUIRE_BROWSER_ENV, ROOT, copy_entry, small_recipe, unavailable
from PIL import Image
from starlette.testclient import TestClient

from kerasae.assess import fid
from kerasae.run import train
from kerasae.serve import explore, server
from kerasae.spec import recipe
from kerasae.store import zoo

SHIPPED = os.path.join(ROOT, "zoo")
SHIPPED_NAMES = [name for name, _ in zoo.entries(SHIPPED)]
PIXEL = 1 / 255 + 1e-4  # PNGs carry 8 bits per pixel


def pixels(url):
    """(H, W) or (H, W, 3) floats in [0, 1] of a PNG data URL."""
    head, _, body = url.partition(",")
    assert head == "data:image/png;base64", head
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body))), dtype="float32") / 255.0


def shown_size(image_shape):
    """(height, width) of an image as the page shows it: a series' columns one grey row above another."""
    height, width, channels = image_shape
    return (height, width) if channels in (1, 3) else (height * channels, width)


def png_url(array):
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype("uint8")).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def stroke_digit(digit, size=280):
    """A drawing of 0, 1 or 7 as a user makes it: white strokes, 20 px wide, on black."""
    from PIL import ImageDraw

    picture = Image.new("L", (size, size))
    draw = ImageDraw.Draw(picture)
    for line in STROKES[digit]:
        draw.line([(x * size, y * size) for x, y in line], fill=255, width=20, joint="curve")
    return np.asarray(picture, dtype="float32") / 255.0


def _ellipse(cx, cy, rx, ry, n=40):
    return [(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in np.linspace(0, 2 * np.pi, n)]


# Strokes in units of the pad's side.
STROKES = {
    0: [_ellipse(0.5, 0.5, 0.2, 0.32)],
    1: [[(0.52, 0.18), (0.5, 0.82)]],
    7: [[(0.28, 0.2), (0.72, 0.2), (0.45, 0.82)]],
}


@pytest.fixture(scope="module")
def shipped_app():
    """One app for the shipped zoo: the API tests and the browser share its loaded models."""
    return server.create_app(SHIPPED)


@pytest.fixture(scope="module")
def client(shipped_app):
    with TestClient(shipped_app) as c:
        yield c


def post(client, entry, what, body):
    return client.post(f"/api/entries/{entry}/{what}", json=body)


# -- the API on the shipped zoo ------------------------------------------------------


def test_the_index_and_every_card_link_and_figure_resolve(client):
    index = client.get("/")
    assert index.status_code == 200
    for name in SHIPPED_NAMES:
        assert f'href="/entries/{name}/"' in index.text, name
    page = client.get("/entries/dae-mnist/")
    assert page.status_code == 200 and "<h1>dae-mnist</h1>" in page.text
    figures = [f for f in os.listdir(os.path.join(SHIPPED, "dae-mnist", "figures")) if f.endswith(".png")]
    for figure in figures:
        assert f'src="figures/{figure}"' in page.text
        got = client.get(f"/entries/dae-mnist/figures/{figure}")
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert client.get("/entries/dae-mnist", follow_redirects=False).headers["location"] == "/entries/dae-mnist/"


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_every_shipped_entry_answers_with_its_models_outputs(client, name):
    entry = os.path.join(SHIPPED, name)
    info = client.get(f"/api/entries/{name}").json()
    check = np.load(os.path.join(entry, zoo.CHECK_FILE))
    label = int(check["y"][0]) if info["conditional"] else None
    assert len(info["test_digits"]) == len(check["x"])
    assert len(info["ranges"]) == info["code_size"] and sorted(info["unit_order"]) == list(range(info["code_size"]))

    # A test image's reconstruction and code are those the entry stored when it was trained.
    got = post(client, name, "reconstruct", {"source": {"test": 0}, "label": label}).json()
    stored = check["reconstructions"][0]
    if stored.shape[-1] not in (1, 3):  # a series' window: its columns drawn one grey row above another
        stored = stored.transpose(2, 0, 1).reshape(-1, stored.shape[1], 1)
    shown = pixels(got["output"]).reshape(stored.shape)
    if stored.min() < 0 or stored.max() > 1:  # shown scaled to [0, 1] by its own range (whitened patches)
        stored = (stored - stored.min()) / (stored.max() - stored.min())
    np.testing.assert_allclose(shown, stored, atol=PIXEL)
    np.testing.assert_allclose(got["code"], check["codes"][0].ravel(), atol=1e-4)
    # ... with its anomaly score, flagged where it lies above the entry's threshold.
    score = got["score"]
    assert np.isfinite(score["value"]) and score["threshold"] == info["score"]["threshold"]
    assert score["flagged"] == (None if score["threshold"] is None else score["value"] > score["threshold"])

    # Decoding that code gives the reconstruction back (a VAE decodes its posterior mean).
    decoded = post(client, name, "decode", {"code": got["code"], "label": label}).json()
    np.testing.assert_allclose(pixels(decoded["image"]), pixels(got["output"]), atol=2 * PIXEL)

    walk = post(client, name, "interpolate", {"a": {"test": 0}, "b": {"test": 1}, "steps": 5, "labels": [label, label]})
    assert walk.status_code == 200 and len(walk.json()["images"]) == 5
    for sampler in info["samplers"]:
        drawn = post(client, name, "sample", {"sampler": sampler, "n": 4, "seed": 1, "label": label}).json()
        assert [pixels(u).shape[:2] for u in drawn["images"]] == [shown_size(info["image_shape"])] * 4
    assert ("prior" in info["samplers"]) == info["generative"]
    assert info["sliders"] == (info["family"] != "vqvae" and info["code_size"] <= explore.MAX_SLIDERS)


@pytest.mark.once
def test_a_drawing_is_framed_like_an_mnist_digit_and_reconstructed_as_it():
    for digit in STROKES:
        x = explore.digit_input(stroke_digit(digit), (28, 28, 1))
        rows, cols = np.nonzero(x[..., 0] > 0.05)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (20, 21), digit  # the 20 x 20 box
        cy, cx = (np.asarray(np.nonzero(x[..., 0] >= 0)) * x[..., 0].ravel()).sum(axis=1) / x.sum()
        assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1  # centred on the centre of mass
        assert fid.classify(x[None])[0] == digit


def test_slider_codes_move_the_image_and_the_corruption_is_the_models(client):
    base = post(client, "vae-mnist", "decode", {"code": [0.0] * 20}).json()["image"]
    moved = post(client, "vae-mnist", "decode", {"code": [0.0] * 19 + [2.5]}).json()["image"]
    assert np.abs(pixels(base) - pixels(moved)).mean() > 0.01
    drawing = {"image": png_url(stroke_digit(7))}
    noisy = post(client, "dae-mnist", "reconstruct", {"source": drawing, "corrupt": True}).json()
    clean, corrupted = pixels(noisy["input"]), pixels(noisy["noisy"])
    dropped = (clean > 0.5) & (corrupted == 0)
    assert 0.1 < dropped.sum() / (clean > 0.5).sum() < 0.3  # masking noise zeroes 20% of the pixels
    assert fid.classify(pixels(noisy["output"])[None, :, :, None])[0] == 7


def test_a_conditional_entry_draws_the_picked_class(client):
    for digit in (3, 8):
        images = post(client, "cvae-mnist", "sample", {"sampler": "prior", "n": 16, "seed": 0, "label": digit}).json()
        shown = np.stack([pixels(u) for u in images["images"]])[..., None]
        assert np.mean(fid.classify(shown) == digit) >= 0.75


BAD_REQUESTS = [
    # (entry, what, body, status, words of the message)
    ("vae-mnist", "decode", {"code": [0.0] * 3}, 400, "code: 3 numbers; vae-mnist's code has 20"),
    ("vae-mnist", "decode", {"code": [0.0] * 19 + ["x"]}, 400, "code.19"),
    ("vae-mnist", "decode", {"code": [0.0] * 20, "label": 3}, 400, "label: vae-mnist is not conditioned"),
    ("vae-mnist", "decode", {"code": [0.0] * 20, "secret": 1}, 400, "secret: Extra inputs are not permitted"),
    ("cvae-mnist", "decode", {"code": [0.0] * 20}, 400, "label: cvae-mnist is a conditional cvae"),
    ("cvae-mnist", "decode", {"code": [0.0] * 20, "label": 10}, 400, "label: 10 is out of range"),
    ("vae-mnist", "reconstruct", {"source": {}}, 400, "source: Value error, give exactly one"),
    ("vae-mnist", "reconstruct", {"source": {"test": 99}}, 400, "source.test: 99 is not a test image"),
    ("vae-mnist", "reconstruct", {"source": {"test": -1}}, 400, "source.test"),
    ("vae-mnist", "reconstruct", {"source": {"image": "hello"}}, 400, "source.image: expected a data:image/png"),
    ("vae-mnist", "reconstruct", {"source": {"image": "data:image/png;base64,!!!"}}, 400, "not a readable image"),
    ("vae-mnist", "reconstruct", {"source": {"image": "data:image/png;base64,iVBORw0KGgo="}}, 400, "not a readable"),
    ("vae-mnist", "reconstruct", {"source": {"test": 0}, "corrupt": True}, 400, "trained without corruption"),
    ("vae-mnist", "interpolate", {"a": {"test": 0}, "b": {"test": 1}, "steps": 500}, 400, "steps: Input should be"),
    ("vae-mnist", "sample", {"sampler": "flows"}, 400, "sampler: Input should be 'prior' or 'gmm'"),
    ("vae-mnist", "sample", {"sampler": "prior", "n": 10_000}, 400, "n: Input should be less than or equal to 64"),
    ("ae-mnist", "sample", {"sampler": "prior"}, 400, "ae-mnist offers no 'prior' sampler"),
    ("../zoo/vae-mnist", "decode", {"code": [0.0] * 20}, 404, "Not Found"),
    ("..", "decode", {"code": [0.0] * 20}, 404, "Not Found"),  # the client resolves the dots first
    (".runs", "decode", {"code": [0.0] * 20}, 404, "no zoo entry named '.runs'"),
    ("README.md", "decode", {"code": [0.0] * 20}, 404, "no zoo entry named 'README.md'"),
]


@pytest.mark.parametrize("entry, what, body, status, words", BAD_REQUESTS, ids=lambda v: str(v)[:30])
def test_bad_requests_get_a_4xx_and_a_message(client, entry, what, body, status, words):
    answer = post(client, entry, what, body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"] and "Traceback" not in answer.text


def test_oversized_foreign_and_malformed_bodies_are_refused(client):
    url = "/api/entries/vae-mnist/decode"
    big = b'{"code": [' + b"0.0, " * 200_000 + b"0.0]}"
    assert client.post(url, content=big, headers={"content-type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: the cap counts what streams in
        for _ in range(200):
            yield b" " * 4096

    streamed = client.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "over" in streamed.json()["error"]
    assert client.post(url, content=b"code=1", headers={"content-type": "text/plain"}).status_code == 415
    broken = client.post(url, content=b'{"code": [0.0,', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "Invalid JSON" in broken.json()["error"]
    huge = Image.new("L", (2000, 10))
    buffer = io.BytesIO()
    huge.save(buffer, format="PNG")
    wide = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    answer = post(client, "vae-mnist", "reconstruct", {"source": {"image": wide}})
    assert answer.status_code == 400 and "2000 x 10 pixels; at most 1024" in answer.json()["error"]
    for path in ("/entries/vae-mnist/figures/..%2Fmodel.keras", "/entries/vae-mnist/figures/model.keras"):
        assert client.get(path).status_code == 404


@pytest.mark.once
def test_cards_cannot_script_the_page():
    html = server.render_markdown(
        "<script>alert(1)</script>\n\n[x](javascript:alert(1)) [y](vae-mnist/README.md) [z](https://arxiv.org)"
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "javascript:" not in html
    assert 'href="/entries/vae-mnist/"' in html and 'href="https://arxiv.org"' in html


# -- a user's zoo: the other families, a 2-D code, no sampler file, an unsafe model ---------------------


FEW_NLL = {"nll_samples": 5}


def _colour_folder(root, size=12):
    """60 RGB PNGs in two class folders: a coloured square or disc on black."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for kind in ("discs", "squares"):
        (root / kind).mkdir()
        for i in range(30):
            cy, cx, r = rng.integers(4, size - 4, 2).tolist() + [3]
            inside = (
                (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                if kind == "discs"
                else np.maximum(abs(yy - cy), abs(xx - cx)) <= r
            )
            picture = np.zeros((size, size, 3), np.uint8)
            picture[inside] = rng.integers(100, 256, 3)
            Image.fromarray(picture).save(root / kind / f"{i:02d}.png")
    return str(root)


NO_NLL = {"nll_samples": 0}


@pytest.fixture(scope="module")
def user_zoo(tmp_path_factory, mnist_like, shared_zoo):
    """Entries of the families the shipped zoo lacks, trained for an epoch, a colour entry, and the
    shared VAE with a 2-D code."""
    folder = str(tmp_path_factory.mktemp("user-zoo"))
    copy_entry(shared_zoo, "test-vae", folder)
    specs = {
        "cae-2d": small_recipe("contractive_ae", mnist_like, 1, model={"latent_dim": 2}),
        "hvae-vamp": small_recipe("hvae", mnist_like, 1, model={"prior": "vamp", "pseudo_inputs": 20}, outputs=NO_NLL),
        # A user's own colour photographs (a folder), with the discretized logistic likelihood.
        "photos-rgb": small_recipe(
            "vae",
            _colour_folder(tmp_path_factory.mktemp("photos")),
            1,
            data={"dataset": "folder", "color_mode": "rgb", "binarize": "none", "test_split": 0.2},
            loss={"likelihood": "logistic", "scale": "per_channel"},
            outputs=FEW_NLL,
        ),
    }
    for name, spec in specs.items():
        spec["name"] = name
        train.run(recipe.validate(spec), folder, verbose=0)
    os.remove(os.path.join(folder, "cae-2d", zoo.SAMPLER_FILE))
    return folder


def _files(folder):
    return {
        os.path.relpath(os.path.join(d, f), folder): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, files in os.walk(folder)
        for f in files
    }


@pytest.mark.once  # the server's side; every backend's model outputs: the shipped entries' test above
def test_a_users_zoo_of_other_families_is_served_and_left_as_it_was(user_zoo):
    before = _files(user_zoo)
    with TestClient(server.create_app(user_zoo)) as c:
        assert all(f"/entries/{name}/" in c.get("/").text for name in ("cae-2d", "hvae-vamp", "test-vae", "photos-rgb"))
        cae = c.get("/api/entries/cae-2d").json()
        assert cae["samplers"] == [] and cae["map"] and cae["sliders"]  # no sampler.npz: nothing fitted now
        hvae = c.get("/api/entries/hvae-vamp").json()
        assert hvae["code_size"] == 4 and hvae["samplers"] == ["prior", "gmm"]
        for name in ("cae-2d", "hvae-vamp", "test-vae", "photos-rgb"):
            got = post(c, name, "reconstruct", {"source": {"image": png_url(stroke_digit(1))}})
            assert got.status_code == 200, got.text
            assert post(c, name, "decode", {"code": got.json()["code"]}).status_code == 200
        photo = post(c, "photos-rgb", "reconstruct", {"source": {"test": 0}}).json()
        assert pixels(photo["input"]).shape == (12, 12, 3) and pixels(photo["output"]).shape == (12, 12, 3)
        assert post(c, "hvae-vamp", "sample", {"sampler": "prior", "n": 3}).status_code == 200
        assert post(c, "cae-2d", "sample", {"sampler": "gmm"}).json()["error"].endswith("(offered: none)")
    assert _files(user_zoo) == before


@pytest.mark.once
def test_an_entry_that_could_run_code_is_not_loaded(user_zoo, tmp_path):
    import keras

    folder = tmp_path / "zoo"
    shutil.copytree(os.path.join(user_zoo, "test-vae"), folder / "evil")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(folder / "evil" / zoo.MODEL_FILE)
    with TestClient(server.create_app(str(folder))) as c:
        answer = c.get("/api/entries/evil")
    assert answer.status_code == 500 and "Lambda" in answer.json()["error"] and "Traceback" not in answer.text


@pytest.mark.once
def test_the_listening_socket_says_it_is_tcp():
    """asyncio sets TCP_NODELAY only on connections of a socket created as IPPROTO_TCP; without it every
    answer waited ~40 ms for a delayed ACK (benchmarks/serve.py: 65 ms a slider move, 28 ms with it)."""
    sock = server.bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


@pytest.mark.once
def test_the_command_serves_a_folder_and_refuses_bad_arguments(user_zoo, tmp_path):
    command = [os.path.join(os.path.dirname(sys.executable), "kerasae"), "serve", "--zoo", user_zoo, "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving {os.path.abspath(user_zoo)} (4 entries) at http://127.0.0.1:"), line
        url = line.split(" at ")[1].strip()
        import httpx

        assert "test-vae" in httpx.get(url, timeout=30).text
        taken = subprocess.run(
            [*command[:-1], url.rsplit(":", 1)[1].strip("/")], capture_output=True, text=True, timeout=120
        )
        assert taken.returncode == 2 and "cannot listen there" in taken.stderr and "Traceback" not in taken.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    missing = subprocess.run([*command[:3], str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: --zoo: no zoo folder at")


# -- in a real browser ------------------------------------------------------------------


def chromium_path():
    return os.environ.get("KERASAE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if not chromium_path():
        unavailable("no chromium on PATH (`python3 tasks.py setup` installs Debian's as root)", REQUIRE_BROWSER_ENV)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # The flags keep Chromium off the network (this machine has none) and run it as root.
        launched = p.chromium.launch(executable_path=chromium_path(), args=BROWSER_FLAGS)
        yield launched
        launched.close()


BROWSER_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Served:
    """A zoo served by uvicorn on a free port, in a thread of this process."""

    def __init__(self, app):
        import uvicorn

        self.sock = server.bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def shipped_site(shipped_app):
    site = Served(shipped_app)
    yield site.url
    site.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 1000}, has_touch=True)
    opened = context.new_page()
    opened.problems = []
    opened.on("console", lambda m: opened.problems.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: opened.problems.append(str(e)))
    opened.on("response", lambda r: opened.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    yield opened
    context.close()


def open_entry(page, url, name):
    page.goto(f"{url}/entries/{name}/")
    page.wait_for_function("window.kerasae.ready && window.kerasae.reconstructions > 0", timeout=60_000)


def shown(page, selector):
    return pixels(page.get_attribute(selector, "src"))


def mouse_stroke(page, digit):
    box = page.locator("#pad").bounding_box()
    for line in STROKES[digit]:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in line]
        page.mouse.move(*points[0])
        page.mouse.down()
        for start, end in zip(points, points[1:]):
            for t in np.linspace(0, 1, 6)[1:]:
                page.mouse.move(start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
        page.mouse.up()


def wait_for(page, count_name, above):
    page.wait_for_function(f"window.kerasae.{count_name} > {above}", timeout=60_000)
    page.wait_for_function("window.kerasae.busy === 0", timeout=60_000)  # the last stroke's answer too
    page.wait_for_function("document.getElementById('output-img').complete")


@pytest.mark.once
@pytest.mark.parametrize("name", ["dae-mnist", "vae-mnist"])
def test_a_digit_drawn_with_the_mouse_is_reconstructed_as_that_digit(page, shipped_site, name):
    open_entry(page, shipped_site, name)
    for digit in (0, 1, 7):
        page.click("#clear")
        done = page.evaluate("window.kerasae.reconstructions")
        mouse_stroke(page, digit)
        wait_for(page, "reconstructions", done + 1)
        seen, output = shown(page, "#input-img"), shown(page, "#output-img")
        assert fid.classify(np.stack([seen, output])[..., None]).tolist() == [digit, digit], (name, digit)
    assert page.problems == []


@pytest.mark.once
def test_a_drawn_digit_gets_the_one_class_models_score_and_verdict(page, shipped_site):
    """The one-class entry (trained on 3s) scores what is drawn; the page says it against the threshold."""
    import kerasae

    model = kerasae.load(os.path.join(SHIPPED, "oneclass-mnist"))
    open_entry(page, shipped_site, "oneclass-mnist")
    verdicts = {}
    for digit in (1, 7):
        page.click("#clear")
        done = page.evaluate("window.kerasae.reconstructions")
        mouse_stroke(page, digit)
        wait_for(page, "reconstructions", done + 1)
        text = page.inner_text("#score")
        value = float(text.split(") ")[1].split(",")[0])
        expected = float(model.score(shown(page, "#input-img")[None, ..., None])[0])
        assert value == pytest.approx(expected, rel=0.02), text  # the PNG shown is 8-bit
        assert (value > model.threshold) == text.split(", ")[1].startswith("flagged"), text
        verdicts[digit] = text
    assert all("threshold" in t for t in verdicts.values())
    assert page.problems == []


@pytest.mark.once
def test_a_touch_stroke_draws_too(page, shipped_site):
    open_entry(page, shipped_site, "ae-mnist")
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#pad").bounding_box()
    done = page.evaluate("window.kerasae.reconstructions")
    points = [(box["x"] + box["width"] * 0.52, box["y"] + box["height"] * y) for y in np.linspace(0.18, 0.82, 12)]
    for kind, point in [("touchStart", points[0])] + [("touchMove", p) for p in points[1:]] + [("touchEnd", None)]:
        touches = [] if point is None else [{"x": point[0], "y": point[1], "radiusX": 5, "radiusY": 5}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touches})
    wait_for(page, "reconstructions", done)
    assert fid.classify(shown(page, "#output-img")[None, :, :, None])[0] == 1
    assert page.problems == []


@pytest.mark.once
def test_moving_a_slider_changes_the_decoded_image(page, shipped_site):
    open_entry(page, shipped_site, "vae-mnist")
    page.wait_for_function("document.getElementById('decoded-img').src.startsWith('data:')")
    before = shown(page, "#decoded-img")
    done = page.evaluate("window.kerasae.decodes")
    slider = page.locator("#sliders input").first
    box = slider.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    page.wait_for_function(f"window.kerasae.decodes > {done}", timeout=30_000)
    page.wait_for_timeout(300)
    assert np.abs(shown(page, "#decoded-img") - before).mean() > 0.01
    assert float(slider.input_value()) > 2.5
    assert page.problems == []


@pytest.mark.once
def test_a_users_entries_the_2d_map_interpolation_and_samples_in_the_browser(page, user_zoo):
    site = Served(server.create_app(user_zoo))
    try:
        for name in ("cae-2d", "hvae-vamp", "photos-rgb"):  # the other families' and a colour entry's pages
            open_entry(page, site.url, name)
        open_entry(page, site.url, "test-vae")
        images = []
        for u, v in ((0.1, 0.1), (0.9, 0.9)):
            done = page.evaluate("window.kerasae.decodes")
            page.locator("#map").click(position={"x": 200 * u, "y": 200 * v})
            page.wait_for_function(f"window.kerasae.decodes > {done}", timeout=30_000)
            images.append(shown(page, "#decoded-img"))
        assert np.abs(images[0] - images[1]).mean() > 0.005
        assert float(page.locator("#sliders input[data-unit='0']").input_value()) > 2  # the map moved z0
        page.click("#test-digits img[data-index='0']")
        page.click("#set-a")
        page.click("#test-digits img[data-index='1']")
        page.wait_for_timeout(300)
        page.click("#set-b")
        page.wait_for_function("document.querySelectorAll('#interpolation img').length === 10", timeout=30_000)
        assert page.locator("#samples img").count() == 16
        answer = page.evaluate(
            """async () => { const r = await fetch('/api/entries/test-vae/decode', {method: 'POST',
               headers: {'Content-Type': 'application/json'}, body: JSON.stringify({code: [1]})});
               return [r.status, (await r.json()).error]; }"""
        )
        assert answer == [400, "code: 1 numbers; test-vae's code has 2"]
        page.problems = [p for p in page.problems if "400" not in p]  # the one bad request above
        assert page.problems == []
    finally:
        site.stop()


@pytest.mark.once
def test_the_corruption_toggle_and_the_digit_picker(page, shipped_site):
    open_entry(page, shipped_site, "dae-mnist")
    done = page.evaluate("window.kerasae.reconstructions")
    page.check("#corrupt")
    wait_for(page, "reconstructions", done)
    assert page.locator("#noisy-figure").is_visible()
    assert np.abs(shown(page, "#noisy-img") - shown(page, "#input-img")).sum() > 1
    open_entry(page, shipped_site, "cvae-mnist")
    page.click("#digit-picker button[data-label='4']")
    page.wait_for_timeout(500)
    page.wait_for_function("document.querySelectorAll('#samples img').length === 16", timeout=30_000)
    page.wait_for_function("[...document.querySelectorAll('#samples img')].every(i => i.complete)")
    samples = np.stack([pixels(i.get_attribute("src")) for i in page.locator("#samples img").all()])[..., None]
    assert np.mean(fid.classify(samples) == 4) >= 0.75
    assert page.problems == []


@pytest.mark.once
def test_every_entry_page_opens_without_console_errors(page, shipped_site):
    page.goto(shipped_site)
    assert page.locator("nav.entries a").count() == len(SHIPPED_NAMES)
    for name in SHIPPED_NAMES:
        open_entry(page, shipped_site, name)
        assert page.locator(".card h1").inner_text() == name
        sources = "[...document.images].filter(i => i.getAttribute('src'))"
        page.wait_for_function(f"{sources}.every(i => i.complete)")
        assert page.evaluate(f"{sources}.length > 5 && {sources}.every(i => i.naturalWidth > 0)"), name
    assert page.problems == []
