"""``make demo`` end to end: the real template on the local stack, sample DICOM through the pipeline."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest

from local import demo
from local.samples import SYNTHETIC_SLICES, sample_paths

pytestmark = pytest.mark.e2e

TEMPLATE = Path(__file__).parents[2] / "template.yaml"


def test_the_demo_imports_the_samples_and_accounts_for_every_upload(tmp_path: Path) -> None:
    # Given the bundled samples, a text file, a zero-byte object and a folder marker
    out = io.StringIO()
    # When the demo runs without a terminal (as in CI)
    status = demo.run(template=TEMPLATE, data_dir=tmp_path, output_dir=tmp_path / "out", out=out, tty=False)
    # Then it succeeds and its summary says what happened to each
    text = out.getvalue()
    assert status == 0, text
    samples = len(sample_paths())
    uploads = samples + SYNTHETIC_SLICES + 3
    image_sets = samples + 1  # the synthetic slices are one series
    assert f"✓ {uploads}/{uploads} objects uploaded" in text
    assert f"✓ {uploads}/{uploads} upload events handled" in text
    assert "✓ 1/1 batches submitted" in text
    assert "✓ 1/1 import jobs finished" in text
    assert f"imported:           {samples + SYNTHETIC_SLICES} files into {image_sets} image sets" in text
    assert "incoming/samples/notes/readme.txt: ValidationException" in text
    assert "not batched:        2" in text  # the zero-byte object and the folder marker
    assert "dead-letter queues: 0 message(s)" in text
    assert "every upload is accounted for" in text
    # … and the completion stage's part: the job reported, each image set announced on the bus
    assert "✓ 1/1 import jobs reported" in text
    assert f"✓ {image_sets}/{image_sets} image sets announced" in text
    assert "job reports:        1 of 1 jobs reported by ImportCompleted" in text
    assert (
        f"announced:          {image_sets} Image Set Imported event(s) on the pipeline bus, 1 Import" in text
    )
    # … and the de-identification stage's: every image set de-identified and announced Ready
    assert f"✓ {image_sets}/{image_sets} image sets de-identified" in text
    assert f"✓ {image_sets}/{image_sets} image sets ready" in text
    assert f"de-identification:  {image_sets} image sets ({image_sets} READY)" in text
    # … and the tagging stage's: every Ready image set tagged
    assert f"✓ {image_sets}/{image_sets} image sets tagged" in text
    assert f"tagged:             {image_sets} image sets" in text
    # … and the thumbnail stage's: every Ready image set rendered, one contact sheet (the synthetic CT)
    assert f"✓ {image_sets}/{image_sets} thumbnails rendered" in text
    assert f"thumbnails:         {image_sets} image sets, 1 contact sheet(s)" in text
    page = tmp_path / "out" / "index.html"
    assert f"Thumbnails: open {page.resolve()}" in text
    # … whose contact page shows every image in a real browser
    loaded = images_in_browser(page)
    assert len(loaded) == image_sets + 1
    assert all(complete and width > 0 for complete, width in loaded), loaded
    # … one line per step, no terminal control codes
    assert "\x1b" not in text
    assert (tmp_path / "functions.log").stat().st_size > 0


def test_the_demo_runs_on_a_folder_of_ones_own(tmp_path: Path) -> None:
    # Given a folder with DICOM files in nested folders
    folder = tmp_path / "mine"
    (folder / "study" / "series").mkdir(parents=True)
    ct, mr = (path for _, path in sample_paths()[:2])
    shutil.copy(ct, folder / "study" / "series" / "one.dcm")
    shutil.copy(mr, folder / "two.dcm")
    out = io.StringIO()
    # When the demo runs on it
    status = demo.run(
        dicom_dir=folder,
        template=TEMPLATE,
        data_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
        out=out,
        tty=False,
    )
    # Then every file of the folder, found recursively, is imported
    text = out.getvalue()
    assert status == 0, text
    assert "files uploaded:     2 (2 file)" in text
    assert "imported:           2 files into 2 image sets" in text


def images_in_browser(page: Path) -> list[tuple[bool, int]]:
    """``(complete, naturalWidth)`` of every ``<img>`` of ``page`` once headless Chromium has loaded it.

    Debian's chromium and chromedriver (``make test`` installs them: the ``browser`` target).
    """
    from selenium import webdriver  # noqa: PLC0415 - only this test drives a browser
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    chromium, chromedriver = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    assert chromium.exists(), "Chromium is missing: `make browser` installs it"
    assert chromedriver.exists(), "ChromeDriver is missing: `make browser` installs it"
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={page.parent / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(chromedriver)))
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script(
                "return document.readyState === 'complete' && [...document.images].every(i => i.complete)"
            )
        )
        images: list[list[Any]] = driver.execute_script(
            "return [...document.images].map(i => [i.complete, i.naturalWidth])"
        )
    finally:
        driver.quit()
    return [(bool(complete), int(width)) for complete, width in images]
