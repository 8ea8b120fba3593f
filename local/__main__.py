"""Command line: ``python -m local`` (``make local``) runs the template offline until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from local.stack import DEFAULT_PORT, LocalStack, StackError
from local.template import TemplateError

QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "werkzeug", "aws_xray_sdk")


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``Key=Value`` items (also SAM's ``ParameterKey=K,ParameterValue=V``) as a mapping."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        if pair.startswith("ParameterKey="):
            key_part, _, value_part = pair.partition(",")
            key, value = key_part.removeprefix("ParameterKey="), value_part.removeprefix("ParameterValue=")
        else:
            key, separator, value = pair.partition("=")
            if not separator or not key:
                raise argparse.ArgumentTypeError(f"expected Key=Value, got {pair!r}")
        overrides[key] = value
    return overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description="Run the SAM template offline: moto (S3, SQS, EventBridge, DynamoDB, …) and the "
        "HealthImaging emulator behind one endpoint, the functions and their event sources in-process.",
    )
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--stack-name", help="prefix of generated names (default: samconfig.toml's)")
    parser.add_argument(
        "--parameter",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter override (repeatable)",
    )
    parser.add_argument(
        "--parameter-overrides",
        default="",
        help='space-separated overrides as `sam deploy` takes them: "Key=Value Key2=Value2"',
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".local"), help="outputs.json and the emulator's state"
    )
    parser.add_argument("--throttling", action="store_true", help="enforce HealthImaging's documented TPS")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="> 1 speeds up throttle refills, schedules and asynchronous retry delays",
    )
    parser.add_argument(
        "--faults", default="", help='HealthImaging fault injection, e.g. "*:ThrottlingException=0.1"'
    )
    parser.add_argument("--function-log", type=Path, help="write the functions' output here, not the console")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        overrides = parse_overrides([*args.parameter_overrides.split(), *args.parameter])
    except argparse.ArgumentTypeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    outputs_file = args.data_dir / "outputs.json"
    stack = LocalStack(
        args.template,
        stack_name=args.stack_name,
        parameters=overrides,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        throttling=args.throttling,
        time_scale=args.time_scale,
        faults=args.faults,
        function_log=args.function_log,
        outputs_file=outputs_file,
    )
    stopping: list[int] = []  # a plain flag: a signal handler must not take locks the main thread may hold

    def stop(signum: int, frame: FrameType | None) -> None:
        del frame
        if stopping:  # asked again while stopping: give up on a clean stop
            raise SystemExit(128 + signum)
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started in the background, where SIGINT is ignored
    try:
        stack.start()
    except (StackError, TemplateError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        print(f"\nLocal stack {stack.stack_name} is running on {stack.endpoint_url}")
        print(f"Outputs ({outputs_file}):")
        for name, value in stack.outputs.items():
            print(f"  {name:<28} {value}")
        print("\nPoint any AWS SDK or the AWS CLI at it:")
        print(f"  export AWS_ENDPOINT_URL={stack.endpoint_url} AWS_DISABLE_HOST_PREFIX_INJECTION=true")
        print("  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1")
        print("Ctrl-C stops it (state is not kept).\n", flush=True)
        while not stopping:
            time.sleep(0.2)
    finally:
        print("\nStopping…", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
