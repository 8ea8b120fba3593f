"""The SAM template running offline: moto and the HealthImaging emulator behind one endpoint.

``python -m local`` (``make local``) runs ``template.yaml`` in the foreground and writes its outputs to
``.local/outputs.json``; :class:`local.stack.LocalStack` is the programmatic entry point (``from local
import LocalStack``); ``make demo`` is :mod:`local.demo`.  The wiring comes from the template alone.

=====================  ==============================================================================
Module                 Role
=====================  ==============================================================================
``template``           YAML/JSON loader with CloudFormation's short-form tags (pure)
``intrinsics``         parameters, pseudo parameters, conditions, ``Ref``/``Fn::*``, creation order
``sam``                ``Globals``, implicit roles, function ``Events`` → SAM's generated resources
``schedule``           ``rate``/``cron``/``at`` expressions
``endpoint``           one HTTP server: ``medical-imaging`` → the emulator, the rest → moto (in-process)
``moto_patches``       S3 → EventBridge events and rule → queue delivery as AWS does them
``providers``          each resource type created through boto3 (names like CloudFormation's)
``functions``          functions run in-process, each in its own sandbox
``event_sources``      SQS pollers, EventBridge (asynchronous) delivery, schedules
``stack``              :class:`LocalStack`, which puts it together
``demo``, ``progress`` ``make demo``; ``emulator_demo`` is ``make demo-emulator``
=====================  ==============================================================================

Where it differs from AWS (beyond what moto and the emulator themselves do):

* IAM, key policies, bucket and queue policies are not enforced (policies are recorded and skipped);
  ``DeletionPolicy: Retain`` is ignored: stopping the stack deletes everything (state is per run).
* All function invocations in the process are serialized (see :mod:`local.functions`); reserved
  concurrency above one is therefore not exercised, and a function running past its ``Timeout``
  completes and is then counted as failed (Lambda would stop it).  Functions run on the host's
  Python, not the declared runtime's (a warning says so when they differ).
* Lambda's SQS pollers scale out to several concurrent batches; here one poller per event source
  gathers batches one after the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local.stack import LocalStack

__all__ = ["LocalStack"]


def __getattr__(name: str) -> Any:
    if name == "LocalStack":
        from local.stack import LocalStack  # noqa: PLC0415 - keeps `import local` light

        return LocalStack
    raise AttributeError(name)
