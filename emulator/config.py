"""Settings of one emulator instance: identity, endpoints, quotas, throttling and timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Quotas:
    """The service quotas the emulator enforces (platform spec §7.2); all adjustable for tests."""

    active_datastores: int = 10
    concurrent_import_jobs: int = 100
    files_per_import_job: int = 5_000
    bytes_per_import_job: int = 10 * 1024**3
    bytes_per_file: int = 4 * 1024**3
    nested_folders_per_import_job: int = 10_000
    update_payload_bytes: int = 10 * 1024
    frames_per_copy: int = 1_000
    metadata_bytes: int = 50 * 1024**2
    tags_per_resource: int = 50


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes one running emulator.

    Endpoints left as None follow boto3's own resolution (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``,
    or real AWS).  Events are published only when ``events`` is true.

    ``retain_original_encoding`` keeps the frames of JPEG Baseline (1.2.840.10008.1.2.4.50), JPEG 2000
    (.4.91) and HTJ2K (.4.203) files in their original encoding, as the service does today (Developer
    Guide, "Supported transfer syntaxes"; ``emulator.imaging.stored_syntax``); False transcodes every
    frame to HTJ2K lossless, as the seed spec describes.
    """

    data_dir: Path | None = None
    account_id: str = "123456789012"
    region: str = "us-east-1"
    s3_endpoint_url: str | None = None
    events: bool = False
    events_endpoint_url: str | None = None
    event_bus_name: str = "default"
    throttling: bool = False
    time_scale: float = 1.0
    fault_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    fault_seed: int | None = None
    transition_delay: float = 0.05
    import_workers: int = 1
    retain_original_encoding: bool = True
    quotas: Quotas = field(default_factory=Quotas)
