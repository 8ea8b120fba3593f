"""Benchmark of the imaging layer (numpy and imagecodecs, ``layers/imaging``): its size and its cold start.

1. Size.  The layer unzipped (the files' sizes summed, in Lambda's MB of 2^20 bytes, the unit of its
   "250 MB unzipped" quota; 10^6-byte MB printed beside) for arm64 and x86_64, against the 40 MB
   target, beside numpy and imagecodecs as pip installs them (bytecode included) for the same
   architecture.  The layers ``make template`` built are reused (``.aws-sam/build/ImagingLayer``, and
   ``.aws-sam/host-<machine>/build/ImagingLayer`` from the import check's host build) when their native
   code is for the architecture; otherwise, or with ``--fresh``, the layer is built here with its own
   Makefile in a temporary folder.
2. Cold start.  In fresh ``python3.12 -S`` processes laid out as on Lambda (the function's folder, the
   built shared layer, the imaging layer for this machine, the runtime's boto3 from
   ``.venv-tools/lambda-runtime``), ``import app`` of ``functions/render_thumbnail`` against
   ``import boto3, numpy``, alternating, median of each.  Target: ≤ 1.5×.  As the layers ship: both
   carry their bytecode (the shared layer beside its sources, the imaging layer instead of them), and
   nothing is written (Lambda's file system is read-only).

Run ``python -m bench.imaging_layer`` (or ``python -m bench --only imaging-layer``); needs
``make template`` first for the built shared layer.  Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER_SOURCE = ROOT / "layers" / "imaging"
FUNCTION_DIR = ROOT / "functions" / "render_thumbnail"
RUNTIME_DIR = ROOT / ".venv-tools" / "lambda-runtime"
BUILD = ROOT / ".aws-sam"
TARGET_MB = 40.0
TARGET_RATIO = 1.5
ARCHITECTURES = {"arm64": (0xB7, "aarch64"), "x86_64": (0x3E, "x86_64")}  # ELF e_machine, wheel tag
HANDLER = "app"
BASELINE = "boto3, numpy"


# ------------------------------------------------------------------------------------------ helpers
def host_architecture() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in ("aarch64", "arm64") else "x86_64"


def megabytes(folder: Path) -> float:
    """Lambda's MB (2^20 bytes)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def architecture_of(site: Path) -> str | None:
    """The architecture of numpy's core extension module in ``site``, if there is one."""
    for path in site.glob("numpy/_core/_multiarray_umath.*.so"):
        header = path.read_bytes()[:20]
        machine = int.from_bytes(header[18:20], "little")
        return next((arch for arch, (code, _) in ARCHITECTURES.items() if code == machine), None)
    return None


def build_layer(architecture: str, artifacts: Path) -> Path:
    """The layer built by its own Makefile, as ``sam build`` runs it."""
    subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", str(LAYER_SOURCE / "Makefile"), "build-ImagingLayer"],
        env={
            **os.environ,
            "ARTIFACTS_DIR": str(artifacts),
            "LAYER_ARCH": architecture,
            "LAYER_PYTHON": sys.executable,
        },
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return artifacts / "python"


def pip_install(architecture: str, target: Path) -> Path:
    """numpy and imagecodecs as pip installs them (the layer's pins and wheels), untrimmed."""
    tag = ARCHITECTURES[architecture][1]
    platforms = [arg for minor in range(17, 35) for arg in ("--platform", f"manylinux_2_{minor}_{tag}")]
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:"),
            *("--implementation", "cp", "--python-version", "3.12", *platforms),
            *("--target", str(target), "-r", str(LAYER_SOURCE / "requirements.txt")),
        ],
        env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
        check=True,
        capture_output=True,
    )
    return target


def built_layer(architecture: str, scratch: Path, *, fresh: bool) -> tuple[Path, str]:
    """The layer for ``architecture``: one ``make template`` built, else one built now."""
    candidates = [BUILD / "build" / "ImagingLayer" / "python"]
    candidates += [BUILD / f"host-{arch}" / "build" / "ImagingLayer" / "python" for arch in ARCHITECTURES]
    if not fresh:
        for site in candidates:
            if architecture_of(site) == architecture:
                return site, str(site.relative_to(ROOT))
    return build_layer(architecture, scratch / f"layer-{architecture}"), "built now"


# ------------------------------------------------------------------------------------------ size
def bench_size(scratch: Path, *, fresh: bool = False) -> tuple[bool, Path]:
    """Both architectures' layer sizes against the target; the host's layer, for the cold start."""
    print(f"\n## Imaging layer size, unzipped (target ≤ {TARGET_MB:.0f} MB; Lambda's MB = 2^20 bytes)")
    ok, host_layer = True, None
    for architecture in ARCHITECTURES:
        site, origin = built_layer(architecture, scratch, fresh=fresh)
        untrimmed = pip_install(architecture, scratch / f"pip-{architecture}")
        size, full = megabytes(site), megabytes(untrimmed)
        verdict = "PASS" if size <= TARGET_MB else "FAIL"
        print(
            f"   {architecture:7} {size:5.1f} MB = {size * 2**20 / 1e6:4.1f} million bytes  "
            f"(untrimmed {full:5.1f} MB, {size / full:.0%} of it)  "
            f"{size / TARGET_MB:.2f} of the target  {verdict}   [{origin}]"
        )
        ok = ok and size <= TARGET_MB
        if architecture == host_architecture():
            host_layer = site
    assert host_layer is not None
    return ok, host_layer


# ------------------------------------------------------------------------------------------ cold start
def shared_layer() -> Path:
    """The built shared layer for this machine (ahi_pipeline with Powertools, pydicom, wrapt)."""
    host = host_architecture()
    for build in (BUILD / f"host-{host}" / "build", BUILD / "build"):
        site = build / "SharedLayer" / "python"
        wrapt = list(site.glob("wrapt/_wrappers.*.so"))
        if site.is_dir() and all(ARCHITECTURES[host][1] in path.name for path in wrapt):
            return site
    raise SystemExit("no shared layer built for this machine: run `make template` first")


def lambda_env(imaging: Path) -> dict[str, str]:
    """A fresh process laid out as Lambda lays out RenderThumbnailFunction (no site-packages: -S)."""
    path = [FUNCTION_DIR, shared_layer(), imaging, RUNTIME_DIR]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "PYTHONPATH": os.pathsep.join(str(p) for p in path),
        "LAMBDA_TASK_ROOT": str(FUNCTION_DIR),
        "AWS_LAMBDA_FUNCTION_NAME": "RenderThumbnailFunction",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "healthimaging-automation",
        "POWERTOOLS_METRICS_NAMESPACE": "HealthImagingAutomation",
        "PYTHONDONTWRITEBYTECODE": "1",  # Lambda's read-only file system
    }
    return env


def import_ms(modules: str, env: dict[str, str]) -> float:
    """Milliseconds to import ``modules`` in a fresh interpreter (measured inside it)."""
    code = f"import time; t = time.perf_counter(); import {modules}; print((time.perf_counter() - t) * 1000)"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env=env,
        cwd=FUNCTION_DIR,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(result.stdout)


def bench_cold_start(imaging: Path, rounds: int = 11) -> bool:
    """Fresh-process ``import app`` against ``import boto3, numpy`` (target ≤ 1.5×)."""
    if sys.version_info[:2] != (3, 12):
        raise SystemExit("the cold start needs python3.12, the runtime's (the layer ships its bytecode)")
    if not (FUNCTION_DIR / "app.py").is_file():
        raise SystemExit(f"{FUNCTION_DIR / 'app.py'} does not exist yet")
    print(f"\n## Cold start: import {HANDLER} (RenderThumbnail) vs import {BASELINE}, median of {rounds}")
    env = lambda_env(imaging)
    for modules in (HANDLER, BASELINE):
        import_ms(modules, env)  # warm-up: the file system cache
    samples: dict[str, list[float]] = {HANDLER: [], BASELINE: []}
    for _ in range(rounds):
        for modules, times in samples.items():
            times.append(import_ms(modules, env))
    handler_ms, baseline_ms = statistics.median(samples[HANDLER]), statistics.median(samples[BASELINE])
    ratio = handler_ms / baseline_ms
    ok = ratio <= TARGET_RATIO
    print(
        f"   as the layers ship (bytecode in both): {BASELINE} {baseline_ms:.0f} ms, "
        f"{HANDLER} {handler_ms:.0f} ms"
    )
    print(f"      {HANDLER} / ({BASELINE}) = {ratio:.2f}  {'PASS' if ok else 'FAIL'}")
    return ok


def run(rounds: int = 11, *, fresh: bool = False) -> bool:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        size_ok, host_layer = bench_size(Path(scratch), fresh=fresh)
        cold_ok = bench_cold_start(host_layer, rounds)
    print(f"   (imaging layer benchmark took {time.perf_counter() - started:.0f} s)")
    return size_ok and cold_ok


def main() -> int:
    parser = argparse.ArgumentParser(description="Imaging layer benchmark: size and cold start")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--fresh", action="store_true", help="build both layers here, reusing no build")
    args = parser.parse_args()
    return 0 if run(args.rounds, fresh=args.fresh) else 1


if __name__ == "__main__":
    raise SystemExit(main())
