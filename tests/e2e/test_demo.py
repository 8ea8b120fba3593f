"""``make demo`` end to end: the real template on the local stack, sample DICOM through the pipeline."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from local import demo
from local.samples import sample_paths

pytestmark = pytest.mark.e2e

TEMPLATE = Path(__file__).parents[2] / "template.yaml"


def test_the_demo_imports_the_samples_and_accounts_for_every_upload(tmp_path: Path) -> None:
    # Given the bundled samples, a text file, a zero-byte object and a folder marker
    out = io.StringIO()
    # When the demo runs without a terminal (as in CI)
    status = demo.run(template=TEMPLATE, data_dir=tmp_path, out=out, tty=False)
    # Then it succeeds and its summary says what happened to each
    text = out.getvalue()
    assert status == 0, text
    samples = len(sample_paths())
    uploads = samples + 3
    assert f"✓ {uploads}/{uploads} objects uploaded" in text
    assert f"✓ {uploads}/{uploads} upload events handled" in text
    assert "✓ 1/1 batches submitted" in text
    assert "✓ 1/1 import jobs finished" in text
    assert f"imported:           {samples} files into {samples} image sets" in text
    assert "incoming/samples/notes/readme.txt: ValidationException" in text
    assert "not batched:        2" in text  # the zero-byte object and the folder marker
    assert "dead-letter queues: 0 message(s)" in text
    assert "every upload is accounted for" in text
    # … and the completion stage's part: the job reported, each image set announced on the bus
    assert "✓ 1/1 import jobs reported" in text
    assert f"✓ {samples}/{samples} image sets announced" in text
    assert "job reports:        1 of 1 jobs reported by ImportCompleted" in text
    assert f"announced:          {samples} Image Set Imported event(s) on the pipeline bus, 1 Import" in text
    # … and the de-identification stage's: every image set de-identified and announced Ready
    assert f"✓ {samples}/{samples} image sets de-identified" in text
    assert f"✓ {samples}/{samples} image sets ready" in text
    assert f"de-identification:  {samples} image sets ({samples} READY)" in text
    # … and the tagging stage's: every Ready image set tagged
    assert f"✓ {samples}/{samples} image sets tagged" in text
    assert f"tagged:             {samples} image sets" in text
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
    status = demo.run(dicom_dir=folder, template=TEMPLATE, data_dir=tmp_path / "state", out=out, tty=False)
    # Then every file of the folder, found recursively, is imported
    text = out.getvalue()
    assert status == 0, text
    assert "files uploaded:     2 (2 file)" in text
    assert "imported:           2 files into 2 image sets" in text
