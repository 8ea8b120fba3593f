"""The pipeline's shared package (the Lambda layer): domain logic, one gateway per service.

Handlers in ``functions/`` parse their event with this package, call one of its functions and return.
Nothing here does I/O at import time: clients are created on first use (:mod:`ahi_pipeline.clients`).

Modules of the ingest stage (StartImport):

* :mod:`ahi_pipeline.settings`: the environment, validated once.
* :mod:`ahi_pipeline.uploads`: SQS messages of S3 "Object Created" events → typed uploads (pure).
* :mod:`ahi_pipeline.batching`: which uploads are accepted, how they group into batches, batch ids and
  staged keys (pure); :mod:`ahi_pipeline.batch_manifest`: a batch's member list as JSON (pure).
* :mod:`ahi_pipeline.s3_gateway`, :mod:`ahi_pipeline.imaging_gateway`, :mod:`ahi_pipeline.batch_store`:
  S3, HealthImaging and the DynamoDB batch table.
* :mod:`ahi_pipeline.ingest`: the stage itself, from parsed messages to the SQS partial batch response.

The completion stage (ImportCompleted, ReconcileJobs): :mod:`ahi_pipeline.job_results` (the job's result
files, parsed and checked; pure), :mod:`ahi_pipeline.pipeline_events` (the pipeline's events and the bus),
:mod:`ahi_pipeline.completion` (the stage and the reconciler).

The de-identification stage (Deidentify): :mod:`ahi_pipeline.deid_profile` (PS3.15 as data; pure),
:mod:`ahi_pipeline.pseudonyms` (keyed pseudonyms, UIDs and date shifts; pure), :mod:`ahi_pipeline.deid_plan`
(the planner; pure), :mod:`ahi_pipeline.image_set_gateway` (HealthImaging image set reads, writes and
tags, shared with tagging), :mod:`ahi_pipeline.deidentify` (the stage).

The tagging stage (TagImageSet): :mod:`ahi_pipeline.tag_rules` (rules, normalization, the PHI guard, the
merge; pure) and :mod:`ahi_pipeline.tagging` (the stage).

Shared: :mod:`ahi_pipeline.clients`, :mod:`ahi_pipeline.observability`, :mod:`ahi_pipeline.runtime` (boto3
clients, the Powertools singletons, the per-environment caches: ``reset_environment`` in tests) and
:mod:`ahi_pipeline.backoff`.
"""

__version__ = "0.6.0"
