"""Command line: ``python -m emulator --host 127.0.0.1 --port 4567 --data-dir .emulator``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from emulator.config import EmulatorConfig, Quotas
from emulator.server import Emulator
from emulator.throttle import parse_fault_spec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description="A local AWS HealthImaging that answers unmodified boto3 and the AWS CLI.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4567, help="0 picks a free port")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".emulator"), help="state survives restarts here"
    )
    parser.add_argument("--region", default="us-east-1", help="Region used when a request carries none")
    parser.add_argument("--account-id", default="123456789012")
    parser.add_argument(
        "--s3-endpoint-url", help="S3 to read inputs from (default: AWS_ENDPOINT_URL_S3 or AWS)"
    )
    parser.add_argument(
        "--events",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="publish service events to EventBridge (default: on when an EventBridge endpoint is "
        "configured: --events-endpoint-url, AWS_ENDPOINT_URL_EVENTS or AWS_ENDPOINT_URL)",
    )
    parser.add_argument(
        "--events-endpoint-url", help="EventBridge endpoint (default: AWS_ENDPOINT_URL_EVENTS)"
    )
    parser.add_argument("--event-bus-name", default="default")
    parser.add_argument("--throttling", action="store_true", help="enforce the documented TPS limits")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="> 1 makes throttle buckets refill faster"
    )
    parser.add_argument(
        "--faults",
        default="",
        help='inject errors, e.g. "StartDICOMImportJob:ThrottlingException=0.2,'
        '*:InternalServerException=0.01"',
    )
    parser.add_argument("--fault-seed", type=int)
    parser.add_argument(
        "--transition-delay", type=float, default=0.05, help="seconds an async state change takes"
    )
    parser.add_argument("--import-workers", type=int, default=1)
    parser.add_argument(
        "--retain-original-encoding",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep JPEG Baseline, JPEG 2000 and HTJ2K frames as imported, as the service does "
        "(--no-retain-original-encoding transcodes every frame to HTJ2K lossless)",
    )
    parser.add_argument("--max-files-per-job", type=int, default=Quotas.files_per_import_job)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def events_enabled(flag: bool | None, endpoint_url: str | None) -> bool:
    """Events go out when asked, or by default when an EventBridge endpoint is configured."""
    if flag is not None:
        return flag
    return bool(
        endpoint_url or os.environ.get("AWS_ENDPOINT_URL_EVENTS") or os.environ.get("AWS_ENDPOINT_URL")
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = EmulatorConfig(
        data_dir=args.data_dir,
        account_id=args.account_id,
        region=args.region,
        s3_endpoint_url=args.s3_endpoint_url,
        events=events_enabled(args.events, args.events_endpoint_url),
        events_endpoint_url=args.events_endpoint_url,
        event_bus_name=args.event_bus_name,
        throttling=args.throttling,
        time_scale=args.time_scale,
        fault_rates=parse_fault_spec(args.faults) if args.faults else {},
        fault_seed=args.fault_seed,
        transition_delay=args.transition_delay,
        import_workers=args.import_workers,
        retain_original_encoding=args.retain_original_encoding,
        quotas=Quotas(files_per_import_job=args.max_files_per_job),
    )
    emulator = Emulator(config, host=args.host, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emulator.start()
    logging.getLogger("emulator").info(
        "HealthImaging emulator on %s (data in %s)", emulator.endpoint_url, args.data_dir
    )
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
