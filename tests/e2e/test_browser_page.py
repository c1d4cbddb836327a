"""The web page at ``/``, driven in headless Chromium against the live embedded stack.

Specification: a user uploads a Fashion-MNIST image and sees exactly what the API answers for
that image (top-k bars, predictive entropy, the class-correlation heatmap); switching to the
deterministic model shows an identity heatmap; dropping a file, the keyboard and API-key auth
work. "Sees" is what is rendered, read back from the page as a user gets it: the visible text
(labels, percentages, entropies in nats, heatmap numbers and class names), the bars' rendered
widths against their tracks, and the heatmap cells' colours (blue for negative, red for
positive, deeper for stronger); each compared with the API's own answer for the same image,
formatted here, not with anything the page stores. A calibrated model's answer also shows
its decision and prediction set in words, at the model's default levels and at a coverage
picked on the page. The upload, the switch and the decision save screenshots,
``artifacts/browser/page_fashion_het.png``, ``page_fashion_det.png`` and
``page_decision.png`` (git-ignored), and print their paths (``pytest -s``). With
``HETSERVE_UPDATE_SCREENSHOT=1`` (``make docs-screenshot``) the upload's screenshot also
becomes the README's ``docs/img/web_page.png``, with its provenance in
``docs/img/web_page.json`` (``bench/provenance.py``: the commit, and the page, contract and
models it shows, so that the docs test finds it stale when they change).

Runs Debian's Chromium (``/usr/bin/chromium``) through Playwright; without Chromium it skips
(``CI=true``: fails).
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import playwright.sync_api as playwright_api  # a dev dependency: its absence is an error
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1280, "height": 900}
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "server" / "src" / "hetgateway" / "static" / "examples"
SCREENSHOT_DIR = REPO_ROOT / "artifacts" / "browser"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "img" / "web_page.png"
DOCS_SCREENSHOT_SHOWS = ("server/src/hetgateway/static", "contract/src/hetcontract/api.py",
                         "model_repo/fashion_het", "model_repo/fashion_det")
"""What the README's screenshot shows: the page, the API contract, the shipped models."""
UPDATE_SCREENSHOT = "HETSERVE_UPDATE_SCREENSHOT"
HET_MODEL = "fashion_het"
DET_MODEL = "fashion_det"
TOP_K = 5
SHIRT_CLASS_ID = 6  # Fashion-MNIST "Shirt": the class most confused with its neighbours
API_KEY = "browser-test-key"
UI_TIMEOUT_MS = 30_000
API_TIMEOUT_S = 30.0


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium with a fresh profile for this module."""
    if not CHROMIUM.exists():
        pytest.skip(f"prerequisite missing: no Chromium at {CHROMIUM} (Debian package 'chromium')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport=VIEWPORT,
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@contextmanager
def opened_page(browser_context: Any, url: str) -> Iterator[Any]:
    """The page at ``url``, loaded (models and examples listed); fails on any JS error."""
    errors: list[str] = []
    tab = browser_context.new_page()
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        tab.goto(url)
        tab.wait_for_selector("body[data-ready='true']")
        yield tab
    finally:
        tab.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture()
def page(browser_context: Any, gateway_url: str) -> Iterator[Any]:
    with opened_page(browser_context, f"{gateway_url}/") as tab:
        yield tab


@pytest.fixture(scope="module")
def shirt_example() -> Path:
    manifest = json.loads((EXAMPLES_DIR / "manifest.json").read_text())
    entry = next(e for e in manifest["examples"] if e["class_id"] == SHIRT_CLASS_ID)
    return EXAMPLES_DIR / entry["file"]


# ---- helpers -----------------------------------------------------------------------------


def api_answer(
    gateway_url: str, model: str, image: Path, *, headers: dict[str, str] | None = None,
    **levels: float,
) -> dict[str, Any]:
    """The gateway's answer for one image, asked the way the page asks (base64 JSON)."""
    body = {"inputs": [{"image": base64.b64encode(image.read_bytes()).decode()}], "top_k": TOP_K,
            **levels}
    response = httpx.post(
        f"{gateway_url}/v1/models/{model}/predict",
        json=body,
        headers=headers,
        timeout=API_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def wait_for_answer(tab: Any, model: str) -> None:
    tab.wait_for_selector(f"[data-testid='result'][data-model='{model}']:not([hidden])")
    tab.wait_for_selector("#result-panel[aria-busy='false']")


BAR_WIDTH_TOLERANCE = 0.01
"""Rendered bar width / track width vs the probability: a pixel or two of a ~300 px track."""
RGB = re.compile(r"rgba?\((\d+), (\d+), (\d+)")


def shown_bars(tab: Any) -> list[dict[str, Any]]:
    """Per bar, top to bottom: the label and value texts and the fill's rendered share of its
    track."""
    return tab.eval_on_selector_all("[data-testid='prob-bar']", """rows => rows.map(row => {
        const track = row.querySelector('.bar-track').getBoundingClientRect();
        const fill = row.querySelector('.bar-fill').getBoundingClientRect();
        return {label: row.querySelector('.bar-label').innerText,
                value: row.querySelector('.bar-value').innerText,
                share: fill.width / track.width};
    })""")


def shown_heatmap(tab: Any) -> dict[str, Any]:
    """The heatmap as rendered: column and row header texts, and per cell its text, colour and
    whether it has a size on screen."""
    return tab.eval_on_selector("[data-testid='heatmap']", """table => ({
        columns: [...table.querySelectorAll('thead th')].map(th => th.innerText),
        rows: [...table.querySelectorAll('tbody tr')].map(tr => tr.querySelector('th').innerText),
        cells: [...table.querySelectorAll('tbody tr')].map(tr =>
            [...tr.querySelectorAll('td')].map(td => ({
                text: td.innerText,
                colour: getComputedStyle(td).backgroundColor,
                visible: td.getBoundingClientRect().width > 0,
            }))),
    })""")


def shown_meter_share(tab: Any) -> float:
    return tab.evaluate("""() => document.getElementById('entropy-fill').getBoundingClientRect()
        .width / document.getElementById('entropy-meter').getBoundingClientRect().width""")


def shown_percent(probability: float) -> str:
    """A probability as a user reads it: a percentage with one decimal."""
    return f"{100 * probability:.1f} %"


def colour(text: str) -> tuple[int, int, int]:
    match = RGB.match(text)
    assert match, f"not a colour: {text}"
    red, green, blue = (int(c) for c in match.groups())
    return red, green, blue


def assert_heatmap_colours(cells: list[list[dict[str, Any]]], matrix: list[list[float]]) -> None:
    """Off the diagonal, negative correlations are blue and positive ones red, and a stronger
    correlation is a deeper colour (less white in it) than a weaker one of the same sign."""
    depth = {}
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if i == j or abs(value) < 0.05:
                continue
            red, green, blue = colour(cells[i][j]["colour"])
            assert (blue > red) if value < 0 else (red > blue), (i, j, value, (red, green, blue))
            depth[value] = 255 - min(red, green, blue)
    for sign in (-1, 1):
        ordered = sorted((abs(v), d) for v, d in depth.items() if v * sign > 0)
        assert all(d1 <= d2 for (_, d1), (_, d2) in itertools.pairwise(ordered)), ordered


def save_screenshot(tab: Any, name: str) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def publish_screenshot(screenshot: Path) -> None:
    """With ``HETSERVE_UPDATE_SCREENSHOT=1``: ``screenshot`` becomes the README's
    docs/img/web_page.png, and docs/img/web_page.json records its provenance."""
    if os.environ.get(UPDATE_SCREENSHOT) != "1":
        return
    spec = importlib.util.spec_from_file_location(
        "hetserve_provenance", REPO_ROOT / "bench" / "provenance.py")
    recorder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recorder)
    shutil.copyfile(screenshot, DOCS_SCREENSHOT)
    record = recorder.provenance(DOCS_SCREENSHOT_SHOWS, command="make docs-screenshot",
                                 loaded=False)
    DOCS_SCREENSHOT.with_suffix(".json").write_text(json.dumps(
        {"provenance": record, "screenshot": str(DOCS_SCREENSHOT.relative_to(REPO_ROOT))},
        indent=2) + "\n")
    print(f"wrote {DOCS_SCREENSHOT} and its provenance")


def assert_page_shows(tab: Any, expected: dict[str, Any]) -> None:
    """What the user sees (texts, bar widths, heatmap cells) is the API's answer."""
    predictions = expected["predictions"]
    bars = shown_bars(tab)
    assert [(b["label"], b["value"]) for b in bars] == [
        (p["label"], shown_percent(p["probability"])) for p in predictions]
    for bar, prediction in zip(bars, predictions, strict=True):
        assert bar["share"] == pytest.approx(prediction["probability"], abs=BAR_WIDTH_TOLERANCE)
    uncertainty = expected["uncertainty"]
    for testid, key, unit in (("entropy-value", "predictive_entropy", " nats"),
                              ("entropy-normalized", "normalized_entropy", ""),
                              ("entropy-expected", "expected_entropy", " nats"),
                              ("mutual-information", "mutual_information", " nats")):
        assert tab.inner_text(f"[data-testid='{testid}']") == f"{uncertainty[key]:.3f}{unit}"
    assert shown_meter_share(tab) == pytest.approx(uncertainty["normalized_entropy"],
                                                   abs=BAR_WIDTH_TOLERANCE)
    correlation = uncertainty["latent_correlation"]
    matrix = correlation["matrix"]
    labels = {p["class_id"]: p["label"] for p in predictions}
    names = [labels[class_id] for class_id in correlation["class_ids"]]
    heatmap = shown_heatmap(tab)
    assert heatmap["columns"] == names and heatmap["rows"] == names
    assert [[cell["text"] for cell in row] for row in heatmap["cells"]] == [
        [shown_number(value) for value in row] for row in matrix]
    assert all(cell["visible"] for row in heatmap["cells"] for cell in row)
    assert_heatmap_colours(heatmap["cells"], matrix)


# ---- tests -------------------------------------------------------------------------------


def test_page_lists_both_models_and_opens_on_the_het_one(page: Any, gateway_url: str) -> None:
    served = {m["name"] for m in httpx.get(f"{gateway_url}/v1/models").json()["models"]}
    options = page.locator("[data-testid='model-option']")

    listed = {options.nth(i).get_attribute("value") for i in range(options.count())}

    assert listed == served >= {HET_MODEL, DET_MODEL}
    assert page.is_checked(f"input[name='model'][value='{HET_MODEL}']")
    assert page.locator("[data-testid='example']").count() == 10


def test_uploaded_image_shows_the_api_answer_as_bars_entropy_and_heatmap(
    page: Any, gateway_url: str, shirt_example: Path
) -> None:
    expected = api_answer(gateway_url, HET_MODEL, shirt_example)

    page.check(f"input[name='model'][value='{HET_MODEL}']")
    page.set_input_files("[data-testid='file-input']", str(shirt_example))
    wait_for_answer(page, HET_MODEL)

    assert_page_shows(page, expected)
    entropy = expected["uncertainty"]["predictive_entropy"]
    assert page.inner_text("[data-testid='entropy-value']") == f"{entropy:.3f} nats"
    max_entropy = float(page.get_attribute("[data-testid='entropy-value']", "data-max-entropy"))
    assert max_entropy == pytest.approx(math.log(10))
    assert page.get_attribute("[data-testid='preview-image']", "alt").endswith(shirt_example.name)
    publish_screenshot(save_screenshot(page, "page_fashion_het"))


def test_page_says_where_each_top_class_probability_moves_for_het_softmax(
    page: Any, gateway_url: str, shirt_example: Path
) -> None:
    """A softmax HET model answers, per top class, the classes its probability moves to and
    their shares: the summary names the top class's first one, the list every listed one, with
    the shares as the user reads them (percentages)."""
    expected = api_answer(gateway_url, HET_MODEL, shirt_example)
    top = expected["uncertainty"]["confusable"][0]
    assert top["confused_with"], "the HET model's noise should move the shirt's probability"
    first = top["confused_with"][0]
    labels = {p["class_id"]: p["label"] for p in expected["predictions"]}

    page.check(f"input[name='model'][value='{HET_MODEL}']")
    page.set_input_files("[data-testid='file-input']", str(shirt_example))
    wait_for_answer(page, HET_MODEL)

    summary = page.locator("[data-testid='confusable-summary']")
    assert summary.get_attribute("data-pair") == f"{top['class_id']},{first['class_id']}"
    text = summary.inner_text()
    assert f"{labels[top['class_id']]} loses probability mostly to {first['label']}" in text
    assert shown_percent(first["share"]) in text
    listed = {
        int(item.get_attribute("data-class-id")): item.inner_text()
        for item in page.locator("[data-testid='confusable-item']").all()
    }
    for entry in expected["uncertainty"]["confusable"]:
        if entry.get("withheld"):  # the page says so instead of naming classes
            assert "withheld" in listed[entry["class_id"]]
        elif not entry["confused_with"]:
            assert entry["class_id"] not in listed
        for c in entry["confused_with"]:
            assert f"{c['label']} ({shown_percent(c['share'])})" in listed[entry["class_id"]]


def shown_number(value: float) -> str:
    """A number as a user reads it on the page: 2 decimals, a true minus sign, no "-0.00"."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text.replace("-", "\u2212")


def shown_set(tab: Any) -> list[str]:
    return [chip.inner_text() for chip in tab.locator("[data-testid='set-member']").all()]


def test_page_says_the_decision_and_the_prediction_set_in_words(
    browser_context: Any, decisions_stack: Any, shirt_example: Path
) -> None:
    """A calibrated model (the shipped HET model calibrated as the demo's export does, on its
    own stack): the verdict a reviewer acts on ("Accept: use ..." or "Send to review"), the
    classes the label is among at the stated coverage, and what the guarantees rest on, each
    the API's answer for the same image, at the model's defaults and at a coverage picked on
    the page."""
    url, model = decisions_stack.url, "het_noisy"
    expected = api_answer(url, model, shirt_example)
    decision, prediction_set = expected["decision"], expected["prediction_set"]

    with opened_page(browser_context, f"{url}/") as tab:
        tab.check(f"input[name='model'][value='{model}']")
        tab.set_input_files("[data-testid='file-input']", str(shirt_example))
        wait_for_answer(tab, model)

        verdict = tab.inner_text("[data-testid='decision-verdict']")
        if decision["accept"]:
            assert verdict.startswith(f"Accept: use “{expected['predictions'][0]['label']}”")
        else:
            assert verdict.startswith("Send to review")
        assert f"{100 * decision['risk']:g} %" in verdict
        assert shown_set(tab) == [c["label"] for c in prediction_set["classes"]]
        assert f"With {100 * prediction_set['coverage']:g} % coverage" in tab.inner_text(
            "[data-testid='prediction-set']")
        assert "noisy-label images" in tab.inner_text("[data-testid='calibration-note']")

        wider = api_answer(url, model, shirt_example, coverage=0.99)
        tab.select_option("[data-testid='coverage']", "0.99")
        tab.wait_for_selector("[data-testid='prediction-set'][data-coverage='0.99']")
        wait_for_answer(tab, model)
        assert shown_set(tab) == [c["label"] for c in wider["prediction_set"]["classes"]]
        assert len(shown_set(tab)) >= len(prediction_set["classes"])
        save_screenshot(tab, "page_decision")

        tab.check("input[name='model'][value='det_plain']")
        wait_for_answer(tab, "det_plain")
        assert tab.inner_text("[data-testid='decision-verdict']") == (
            "No decision: this model was not calibrated.")
        assert "without labelled calibration images" in tab.inner_text(
            "[data-testid='calibration-note']")
        assert tab.is_hidden("[data-testid='levels']")


def test_switching_to_the_deterministic_model_shows_an_identity_heatmap(
    page: Any, gateway_url: str, shirt_example: Path
) -> None:
    expected = api_answer(gateway_url, DET_MODEL, shirt_example)

    page.check(f"input[name='model'][value='{HET_MODEL}']")
    page.set_input_files("[data-testid='file-input']", str(shirt_example))
    wait_for_answer(page, HET_MODEL)
    page.check(f"input[name='model'][value='{DET_MODEL}']")
    wait_for_answer(page, DET_MODEL)

    assert_page_shows(page, expected)
    cells = shown_heatmap(page)["cells"]
    assert [[cell["text"] for cell in row] for row in cells] == [
        ["1.00" if i == j else "0.00" for j in range(TOP_K)] for i in range(TOP_K)]
    assert page.get_attribute("[data-testid='confusable-summary']", "data-pair") == ""
    assert "makes no claim" in page.inner_text("[data-testid='confusable-summary']")
    assert page.locator("[data-testid='confusable-item']").count() == 0
    save_screenshot(page, "page_fashion_det")


def test_an_image_dropped_on_the_drop_zone_is_predicted(page: Any, gateway_url: str) -> None:
    trouser = EXAMPLES_DIR / "1_trouser.png"
    expected = api_answer(gateway_url, HET_MODEL, trouser)
    page.check(f"input[name='model'][value='{HET_MODEL}']")

    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            return transfer;
        }""",
        base64.b64encode(trouser.read_bytes()).decode(),
    )
    page.dispatch_event("[data-testid='drop-zone']", "drop", {"dataTransfer": transfer})
    wait_for_answer(page, HET_MODEL)

    assert page.inner_text("[data-testid='preview-caption']") == "dropped.png"
    assert_page_shows(page, expected)


def test_examples_and_model_switch_work_from_the_keyboard(page: Any, gateway_url: str) -> None:
    page.check(f"input[name='model'][value='{HET_MODEL}']")
    example = page.locator(f"[data-testid='example'][data-class-id='{SHIRT_CLASS_ID}']")
    example.focus()
    page.keyboard.press("Enter")
    wait_for_answer(page, HET_MODEL)
    assert example.get_attribute("aria-pressed") == "true"

    page.focus(f"input[name='model'][value='{HET_MODEL}']")
    page.keyboard.press("ArrowRight")
    wait_for_answer(page, DET_MODEL)
    assert page.is_checked(f"input[name='model'][value='{DET_MODEL}']")


def test_a_file_that_is_not_an_image_shows_the_gateways_error(
    page: Any, tmp_path: Path, shirt_example: Path
) -> None:
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are words, not pixels")

    page.set_input_files("[data-testid='file-input']", str(not_an_image))
    alert = page.locator("[data-testid='error']")
    alert.wait_for(state="visible")

    assert alert.get_attribute("role") == "alert"
    assert alert.inner_text().endswith("(invalid_image)")
    page.set_input_files("[data-testid='file-input']", str(shirt_example))
    wait_for_answer(page, page.get_attribute("input[name='model']:checked", "value"))
    assert alert.is_hidden()


def test_page_asks_for_the_api_key_when_auth_is_on_and_then_works(
    browser_context: Any,
    triton_server: Any,
    launch_gateway: Callable[..., str],
    shirt_example: Path,
) -> None:
    url = launch_gateway(
        triton_server.grpc_url,
        wait_for="/readyz",
        api_keys=API_KEY,
        model_repositories=json.dumps([str(p) for p in triton_server.source_repositories]),
    )
    expected = api_answer(url, HET_MODEL, shirt_example, headers={"X-API-Key": API_KEY})

    with opened_page(browser_context, f"{url}/") as tab:
        assert "API key" in tab.inner_text("[data-testid='error']")
        assert tab.locator("[data-testid='api-key']").is_visible()

        tab.fill("[data-testid='api-key']", API_KEY)
        tab.keyboard.press("Enter")
        tab.wait_for_selector(f"input[name='model'][value='{HET_MODEL}']")
        tab.check(f"input[name='model'][value='{HET_MODEL}']")
        tab.set_input_files("[data-testid='file-input']", str(shirt_example))
        wait_for_answer(tab, HET_MODEL)

        assert_page_shows(tab, expected)
        assert tab.evaluate("sessionStorage.getItem('hetserve.apiKey')") == API_KEY
        assert tab.evaluate("localStorage.length") == 0
