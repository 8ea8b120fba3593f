"""Starting the local runtime: parameter overrides, errors that name their cause, the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local.stack import LocalStack, StackError, default_stack_name
from tests.local.conftest import FIXTURES, TEMPLATE

pytestmark = pytest.mark.integration

EXISTING_DATASTORE = "0123456789abcdef0123456789abcdef"


def test_overrides_pick_the_other_branches_and_the_process_is_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a host with an AWS profile set
    monkeypatch.setenv("AWS_PROFILE", "somebody")
    before = dict(os.environ)
    # When the stack starts with an existing data store and strict mode
    with LocalStack(
        TEMPLATE,
        port=0,
        stack_name="overrides",
        parameters={"DatastoreId": EXISTING_DATASTORE, "Mode": "strict", "BatchSize": "5"},
    ) as stack:
        # Then no data store is created and the conditional values follow
        assert "Datastore" not in stack.resources
        assert stack.outputs["DatastoreId"] == EXISTING_DATASTORE
        assert stack.outputs["StrictOnly"] == "strict"
        assert stack.conditions == {"CreateDatastore": False, "Strict": True}
        assert stack.parameters["BatchSize"] == 5
        environment = stack.invoke("RecorderFunction", {"inspect": True}).response["environment"]
        assert environment["STRICT"] == "yes"
        assert environment["DATASTORE_ID"] == EXISTING_DATASTORE
        # … nothing in the process can reach a real account meanwhile
        assert "AWS_PROFILE" not in os.environ
        assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
        # … and only one stack runs in a process
        with pytest.raises(StackError, match="already running"):
            LocalStack(TEMPLATE, port=0).start()
    # … and once stopped, the host's environment is back
    assert dict(os.environ) == before


def _template(tmp_path: Path, resources: str, parameters: str = "") -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(f"Transform: AWS::Serverless-2016-10-31\n{parameters}Resources:\n{resources}")
    return path


RECORDER = FIXTURES / "functions" / "recorder"


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (
            "  Topic:\n    Type: AWS::SNS::Topic\n",
            r"Topic \(AWS::SNS::Topic\): resource type AWS::SNS::Topic is not supported",
        ),
        (
            f"  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n      CodeUri: {RECORDER}\n"
            "      Handler: app.lambda_handler\n      Events:\n        Web:\n          Type: Api\n"
            "          Properties: {Path: /, Method: get}\n",
            r"Fn.Events.Web: event type 'Api' is not supported",
        ),
        (
            "  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n      CodeUri: nowhere\n"
            "      Handler: app.lambda_handler\n",
            r"Fn \(AWS::Serverless::Function\): CodeUri .*nowhere is not a folder",
        ),
        (
            f"  Q:\n    Type: AWS::SQS::Queue\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
            f"      CodeUri: {RECORDER}\n      Handler: app.lambda_handler\n      Events:\n        Q:\n"
            "          Type: SQS\n          Properties: {Queue: !GetAtt Q.Arn, BatchSize: 50}\n",
            r"FnQ .*BatchSize above 10 needs MaximumBatchingWindowInSeconds",
        ),
        (
            "  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !ImportValue shared\n",
            r"Q \(AWS::SQS::Queue\): .*Fn::ImportValue",
        ),
        (
            "  A:\n    Type: AWS::SQS::Queue\n    DependsOn: B\n  B:\n    Type: AWS::SQS::Queue\n"
            "    DependsOn: A\n",
            "circular dependency between resources",
        ),
    ],
    ids=["unsupported-type", "unsupported-event", "missing-code", "batch-window", "import-value", "cycle"],
)
def test_what_cannot_run_locally_is_refused_with_a_clear_error(
    tmp_path: Path, resources: str, message: str
) -> None:
    with pytest.raises((StackError, ValueError), match=message):
        LocalStack(_template(tmp_path, resources), port=0, stack_name="errors").start()
    # … and the failed start left nothing running: another stack starts
    with LocalStack(_template(tmp_path, "  Q:\n    Type: AWS::SQS::Queue\n"), port=0, stack_name="after"):
        pass


def test_the_stack_name_defaults_to_samconfigs(tmp_path: Path) -> None:
    template = _template(tmp_path, "  Q:\n    Type: AWS::SQS::Queue\n")
    assert default_stack_name(template) == "ahi-local"
    (tmp_path / "samconfig.toml").write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "mine"\n'
    )
    assert default_stack_name(template) == "mine"


def test_the_command_line_runs_the_stack_until_it_is_stopped(tmp_path: Path) -> None:
    # Given `python -m local` on the fixture template
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local",
            "--template",
            str(TEMPLATE),
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--stack-name",
            "cli",
            "-p",
            "BatchSize=3",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        # When it has started
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while not any("is running on" in line for line in lines):
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        # Then it prints the endpoint and writes the outputs keyed like the template's Outputs
        endpoint = next(line for line in lines if "is running on" in line).split()[-1]
        assert endpoint.startswith("http://127.0.0.1:")
        outputs = json.loads((tmp_path / "outputs.json").read_text())
        assert outputs["LandingBucketName"].startswith("cli-landingbucket-")
        assert outputs["UploadQueueUrl"].startswith(endpoint)
    finally:
        # … and stops cleanly on SIGTERM
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
