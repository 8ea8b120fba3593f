"""``make demo-emulator``: moto and the emulator on loopback, the bundled samples imported and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from local import emulator_demo

pytestmark = pytest.mark.e2e


def test_the_emulator_demo_imports_every_sample_and_verifies_every_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the emulator demo's servers and bundled sample DICOM
    # When the scenario runs
    status = emulator_demo.run(tmp_path)
    # Then it succeeds: every sample imported, the non-DICOM file reported, every frame verified
    out = capsys.readouterr().out
    assert status == 0, out
    samples = len(emulator_demo.sample_paths())
    assert f"{samples} of {samples + 1} files imported" in out
    assert "FAILED study/notes/readme.txt: ValidationException" in out
    assert "Import Job Completed" in out
    # … one frame per sample written out: HTJ2K, or the encoding the service kept as uploaded
    written = [p.suffix for p in tmp_path.iterdir()]
    assert len(written) == samples
    assert set(written) <= {".jph", ".jpg", ".j2c", ".jhc"}
    assert ".jph" in written
