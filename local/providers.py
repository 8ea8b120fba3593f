"""Resource providers: each supported resource type created in moto or the emulator through boto3.

A provider turns a resource's *resolved* properties into API calls on the local endpoint and returns a
:class:`Resource`: its physical id (what ``Ref`` returns) and its ``Fn::GetAtt`` attributes.  Names
that the template leaves out are generated like CloudFormation does (``<stack>-<LogicalId>-<SUFFIX>``,
truncated to the service's limit, lower case for buckets), with a suffix derived from the stack name
and logical id so that a restart yields the same names.

Types with no local meaning (policies, permissions, log groups, alarms) are recorded and skipped with
a log line; any other type not listed in :data:`PROVIDERS` is refused with an error naming it.
Functions and layers are not created in any service: the runtime runs functions itself
(:mod:`local.functions`), so their providers only compute names and ARNs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from botocore.exceptions import ClientError

from local.template import TemplateError

__all__ = [
    "NO_LOCAL_MEANING",
    "PROVIDERS",
    "ProviderContext",
    "Resource",
    "physical_name",
]

log = logging.getLogger(__name__)


@dataclass
class Resource:
    """One created (or recorded) resource of the stack."""

    logical_id: str
    type: str
    physical_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def get_att(self, attribute: str) -> Any:
        if attribute not in self.attributes:
            known = ", ".join(sorted(self.attributes)) or "none"
            raise TemplateError(
                f"Fn::GetAtt {self.logical_id}.{attribute}: {self.type} has no such attribute locally "
                f"(known: {known})"
            )
        return self.attributes[attribute]


class ProviderContext(Protocol):
    """What providers need from the stack."""

    stack_name: str
    region: str
    account_id: str
    base_dir: Path

    def client(self, service: str) -> Any: ...

    def event_target(self, rule_id: str, target: dict[str, Any]) -> dict[str, Any]:
        """The target to put on the rule locally (a function's becomes its delivery queue)."""
        ...


Create = Callable[[ProviderContext, str, dict[str, Any]], Resource]
Delete = Callable[[ProviderContext, Resource], None]


def physical_name(stack: str, logical_id: str, limit: int, *, lower: bool = False, suffix: str = "") -> str:
    """``<stack>-<LogicalId>-<SUFFIX>`` within ``limit`` characters, like CloudFormation's names."""
    digest = base64.b32encode(hashlib.sha256(f"{stack}/{logical_id}".encode()).digest()).decode()
    random_part = digest[:12]
    budget = limit - len(random_part) - 1 - len(suffix)
    prefix = f"{stack}-{logical_id}"[:budget].rstrip("-")
    name = f"{prefix}-{random_part}{suffix}"
    return name.lower() if lower else name


def _tags(value: Any) -> dict[str, str]:
    """Tags given as CloudFormation's ``[{Key, Value}]`` or a map, as a map."""
    if isinstance(value, list):
        return {str(item["Key"]): str(item["Value"]) for item in value}
    return {str(key): str(item) for key, item in (value or {}).items()}


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _string_attributes(properties: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for name in names:
        if name in properties:
            value = properties[name]
            if isinstance(value, bool):
                attributes[name] = "true" if value else "false"
            elif isinstance(value, dict | list):
                attributes[name] = json.dumps(value)
            else:
                attributes[name] = str(value)
    return attributes


def _ignore_missing(action: Callable[[], Any]) -> None:
    try:
        action()
    except ClientError as error:
        log.debug("cleanup: %s", error)


# ---------------------------------------------------------------------- KMS
def create_kms_key(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    kms = ctx.client("kms")
    request: dict[str, Any] = {
        "Description": props.get("Description", f"{ctx.stack_name} {logical_id}"),
        "KeyUsage": props.get("KeyUsage", "ENCRYPT_DECRYPT"),
        "KeySpec": props.get("KeySpec", "SYMMETRIC_DEFAULT"),
        "Tags": [{"TagKey": k, "TagValue": v} for k, v in _tags(props.get("Tags")).items()],
    }
    if "KeyPolicy" in props:
        request["Policy"] = _json(props["KeyPolicy"])
    metadata = kms.create_key(**request)["KeyMetadata"]
    if props.get("EnableKeyRotation"):
        kms.enable_key_rotation(KeyId=metadata["KeyId"])
    if props.get("Enabled") is False:
        kms.disable_key(KeyId=metadata["KeyId"])
    return Resource(
        logical_id,
        "AWS::KMS::Key",
        metadata["KeyId"],
        {"Arn": metadata["Arn"], "KeyId": metadata["KeyId"]},
    )


def delete_kms_key(ctx: ProviderContext, resource: Resource) -> None:
    _ignore_missing(lambda: ctx.client("kms").schedule_key_deletion(KeyId=resource.physical_id))


def create_kms_alias(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    name = str(props["AliasName"])
    ctx.client("kms").create_alias(AliasName=name, TargetKeyId=str(props["TargetKeyId"]))
    return Resource(logical_id, "AWS::KMS::Alias", name)


def delete_kms_alias(ctx: ProviderContext, resource: Resource) -> None:
    _ignore_missing(lambda: ctx.client("kms").delete_alias(AliasName=resource.physical_id))


# ---------------------------------------------------------------------- S3
def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in PutBucketLifecycleConfiguration's shape."""
    api: dict[str, Any] = {"Status": rule.get("Status", "Enabled"), "Filter": _lifecycle_filter(rule)}
    if "Id" in rule:
        api["ID"] = rule["Id"]
    expiration = {
        api_name: convert(rule[name])
        for name, api_name, convert in (
            ("ExpirationInDays", "Days", int),
            ("ExpirationDate", "Date", str),
            ("ExpiredObjectDeleteMarker", "ExpiredObjectDeleteMarker", bool),
        )
        if name in rule
    }
    if expiration:
        api["Expiration"] = expiration
    noncurrent = rule.get("NoncurrentVersionExpiration")
    if noncurrent is None and "NoncurrentVersionExpirationInDays" in rule:
        noncurrent = {"NoncurrentDays": rule["NoncurrentVersionExpirationInDays"]}
    if noncurrent is not None:
        api["NoncurrentVersionExpiration"] = {key: int(value) for key, value in noncurrent.items()}
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        api["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if "Transitions" in rule:
        api["Transitions"] = [
            {"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
            for t in rule["Transitions"]
        ]
    return api


def _lifecycle_filter(rule: Mapping[str, Any]) -> dict[str, Any]:
    """The rule's ``Filter``: one condition as is, several under ``And``."""
    conditions: dict[str, Any] = {}
    if "Prefix" in rule:
        conditions["Prefix"] = rule["Prefix"]
    for name in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        if name in rule:
            conditions[name] = int(rule[name])
    tags = [{"Key": t["Key"], "Value": t["Value"]} for t in rule.get("TagFilters", [])]
    if len(conditions) + len(tags) > 1:
        return {"And": {**conditions, **({"Tags": tags} if tags else {})}}
    if tags:
        return {"Tag": tags[0]}
    return conditions or {"Prefix": ""}


def _filter_rules(source: Mapping[str, Any] | None) -> dict[str, Any]:
    rules = ((source or {}).get("S3Key") or {}).get("Rules") or []
    return (
        {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}} if rules else {}
    )


def _notification_configuration(ctx: ProviderContext, props: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if (props.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled") in (True, "true"):
        config["EventBridgeConfiguration"] = {}
    queues = [
        {
            "QueueArn": q["Queue"],
            "Events": [q["Event"]],
            **({"Filter": f} if (f := _filter_rules(q.get("Filter"))) else {}),
        }
        for q in props.get("QueueConfigurations", [])
    ]
    topics = [
        {
            "TopicArn": t["Topic"],
            "Events": [t["Event"]],
            **({"Filter": f} if (f := _filter_rules(t.get("Filter"))) else {}),
        }
        for t in props.get("TopicConfigurations", [])
    ]
    if props.get("LambdaConfigurations"):
        raise TemplateError(
            "S3 LambdaConfigurations are not supported locally: route S3 events through EventBridge "
            "(EventBridgeConfiguration) or a queue"
        )
    if queues:
        config["QueueConfigurations"] = queues
    if topics:
        config["TopicConfigurations"] = topics
    return config


def _encryption(ctx: ProviderContext, value: Any) -> dict[str, Any]:
    rules = [
        {
            "ApplyServerSideEncryptionByDefault": dict(rule["ServerSideEncryptionByDefault"]),
            **({"BucketKeyEnabled": bool(rule["BucketKeyEnabled"])} if "BucketKeyEnabled" in rule else {}),
        }
        for rule in value["ServerSideEncryptionConfiguration"]
    ]
    return {"ServerSideEncryptionConfiguration": {"Rules": rules}}


def _cors(ctx: ProviderContext, value: Any) -> dict[str, Any]:
    rules = [
        {
            "AllowedMethods": rule["AllowedMethods"],
            "AllowedOrigins": rule["AllowedOrigins"],
            **{key: rule[key] for key in ("AllowedHeaders", "ExposedHeaders") if key in rule},
            **({"MaxAgeSeconds": int(rule["MaxAge"])} if "MaxAge" in rule else {}),
        }
        for rule in value["CorsRules"]
    ]
    return {"CORSConfiguration": {"CORSRules": rules}}


#: Bucket properties applied after CreateBucket: property → (S3 operation, request builder).
_BUCKET_SETTINGS: Final[dict[str, tuple[str, Callable[[ProviderContext, Any], dict[str, Any]]]]] = {
    "OwnershipControls": ("put_bucket_ownership_controls", lambda ctx, v: {"OwnershipControls": v}),
    "PublicAccessBlockConfiguration": (
        "put_public_access_block",
        lambda ctx, v: {"PublicAccessBlockConfiguration": dict(v)},
    ),
    "VersioningConfiguration": (
        "put_bucket_versioning",
        lambda ctx, v: {"VersioningConfiguration": {"Status": v["Status"]}},
    ),
    "BucketEncryption": ("put_bucket_encryption", _encryption),
    "LifecycleConfiguration": (
        "put_bucket_lifecycle_configuration",
        lambda ctx, v: {"LifecycleConfiguration": {"Rules": [_lifecycle_rule(rule) for rule in v["Rules"]]}},
    ),
    "Tags": (
        "put_bucket_tagging",
        lambda ctx, v: {"Tagging": {"TagSet": [{"Key": k, "Value": t} for k, t in _tags(v).items()]}},
    ),
    "CorsConfiguration": ("put_bucket_cors", _cors),
    "NotificationConfiguration": (
        "put_bucket_notification_configuration",
        lambda ctx, v: {"NotificationConfiguration": _notification_configuration(ctx, v)},
    ),
}
_BUCKET_CREATE_PROPERTIES: Final = ("BucketName", "ObjectLockEnabled")


def create_bucket(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    s3 = ctx.client("s3")
    name = str(props.get("BucketName") or physical_name(ctx.stack_name, logical_id, 63, lower=True))
    request: dict[str, Any] = {"Bucket": name}
    if ctx.region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
    if props.get("ObjectLockEnabled"):
        request["ObjectLockEnabledForBucket"] = True
    s3.create_bucket(**request)
    for key, value in props.items():
        if key in _BUCKET_SETTINGS:
            operation, build = _BUCKET_SETTINGS[key]
            getattr(s3, operation)(Bucket=name, **build(ctx, value))
        elif key not in _BUCKET_CREATE_PROPERTIES:
            log.info("%s: %s is not applied locally", logical_id, key)
    partition_host = f"{name}.s3.{ctx.region}.amazonaws.com"
    return Resource(
        logical_id,
        "AWS::S3::Bucket",
        name,
        {
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": partition_host,
            "DualStackDomainName": f"{name}.s3.dualstack.{ctx.region}.amazonaws.com",
            "WebsiteURL": f"http://{name}.s3-website-{ctx.region}.amazonaws.com",
        },
    )


def delete_bucket(ctx: ProviderContext, resource: Resource) -> None:
    s3 = ctx.client("s3")
    name = resource.physical_id
    try:
        paginator = s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=name):
            items = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            for start in range(0, len(items), 1000):
                s3.delete_objects(Bucket=name, Delete={"Objects": items[start : start + 1000], "Quiet": True})
        s3.delete_bucket(Bucket=name)
    except ClientError as error:
        log.debug("cleanup of bucket %s: %s", name, error)


# ---------------------------------------------------------------------- SQS
_QUEUE_ATTRIBUTES: Final = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
)


def create_queue(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    sqs = ctx.client("sqs")
    fifo = props.get("FifoQueue") in (True, "true")
    name = str(
        props.get("QueueName")
        or physical_name(ctx.stack_name, logical_id, 80, suffix=".fifo" if fifo else "")
    )
    attributes = _string_attributes(props, _QUEUE_ATTRIBUTES)
    if not fifo:
        attributes.pop("FifoQueue", None)
    request: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
    if "Tags" in props:
        request["tags"] = _tags(props["Tags"])
    url = sqs.create_queue(**request)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return Resource(logical_id, "AWS::SQS::Queue", url, {"Arn": arn, "QueueName": name, "QueueUrl": url})


def delete_queue(ctx: ProviderContext, resource: Resource) -> None:
    _ignore_missing(lambda: ctx.client("sqs").delete_queue(QueueUrl=resource.physical_id))


# ---------------------------------------------------------------------- EventBridge
def create_event_bus(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    name = str(props["Name"])
    request: dict[str, Any] = {"Name": name}
    if "Tags" in props:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(props["Tags"]).items()]
    arn = ctx.client("events").create_event_bus(**request)["EventBusArn"]
    return Resource(logical_id, "AWS::Events::EventBus", name, {"Arn": arn, "Name": name})


def delete_event_bus(ctx: ProviderContext, resource: Resource) -> None:
    _ignore_missing(lambda: ctx.client("events").delete_event_bus(Name=resource.physical_id))


_TARGET_KEYS: Final = (
    "Id",
    "Arn",
    "Input",
    "InputPath",
    "InputTransformer",
    "SqsParameters",
    "RoleArn",
    "RetryPolicy",
    "DeadLetterConfig",
)


def create_rule(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    events = ctx.client("events")
    name = str(props.get("Name") or physical_name(ctx.stack_name, logical_id, 64))
    bus = str(props.get("EventBusName") or "default")
    bus_name = bus.rsplit("/", 1)[-1] if bus.startswith("arn:") else bus
    request: dict[str, Any] = {"Name": name, "EventBusName": bus_name, "State": props.get("State", "ENABLED")}
    if "EventPattern" in props:
        request["EventPattern"] = _json(props["EventPattern"])
    if "ScheduleExpression" in props:
        request["ScheduleExpression"] = str(props["ScheduleExpression"])
    if "Description" in props:
        request["Description"] = str(props["Description"])
    arn = events.put_rule(**request)["RuleArn"]
    targets = [
        ctx.event_target(logical_id, {key: target[key] for key in _TARGET_KEYS if key in target})
        for target in props.get("Targets", [])
    ]
    for target in targets:
        if "InputTransformer" in target:
            target["InputTransformer"] = {
                "InputTemplate": target["InputTransformer"]["InputTemplate"],
                **(
                    {"InputPathsMap": target["InputTransformer"]["InputPathsMap"]}
                    if "InputPathsMap" in target["InputTransformer"]
                    else {}
                ),
            }
    if targets:
        events.put_targets(Rule=name, EventBusName=bus_name, Targets=targets)
    physical = name if bus_name == "default" else f"{bus_name}|{name}"
    return Resource(
        logical_id,
        "AWS::Events::Rule",
        physical,
        {"Arn": arn},
        properties={**props, "Name": name, "EventBusName": bus_name, "Targets": targets},
    )


def delete_rule(ctx: ProviderContext, resource: Resource) -> None:
    events = ctx.client("events")
    name, bus = resource.properties["Name"], resource.properties["EventBusName"]

    def remove() -> None:
        ids = [t["Id"] for t in events.list_targets_by_rule(Rule=name, EventBusName=bus).get("Targets", [])]
        if ids:
            events.remove_targets(Rule=name, EventBusName=bus, Ids=ids)
        events.delete_rule(Name=name, EventBusName=bus)

    _ignore_missing(remove)


# ---------------------------------------------------------------------- DynamoDB
def create_table(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    dynamodb = ctx.client("dynamodb")
    name = str(props.get("TableName") or physical_name(ctx.stack_name, logical_id, 255))
    billing = str(props.get("BillingMode", "PROVISIONED"))
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": billing,
    }
    if billing == "PROVISIONED":
        request["ProvisionedThroughput"] = _throughput(props.get("ProvisionedThroughput"))
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if key in props:
            request[key] = [
                {k: v for k, v in index.items() if k != "ProvisionedThroughput" or billing == "PROVISIONED"}
                | (
                    {"ProvisionedThroughput": _throughput(index.get("ProvisionedThroughput"))}
                    if billing == "PROVISIONED" and key == "GlobalSecondaryIndexes"
                    else {}
                )
                for index in props[key]
            ]
    if "StreamSpecification" in props:
        request["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    if "SSESpecification" in props:
        sse = props["SSESpecification"]
        request["SSESpecification"] = {
            "Enabled": sse.get("SSEEnabled", False) in (True, "true"),
            **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {}),
            **({"KMSMasterKeyId": sse["KMSMasterKeyId"]} if "KMSMasterKeyId" in sse else {}),
        }
    if "Tags" in props:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(props["Tags"]).items()]
    if "DeletionProtectionEnabled" in props:
        request["DeletionProtectionEnabled"] = props["DeletionProtectionEnabled"] in (True, "true")
    description = dynamodb.create_table(**request)["TableDescription"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled") in (True, "true"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
        )
    attributes = {"Arn": description["TableArn"]}
    if "LatestStreamArn" in description:
        attributes["StreamArn"] = description["LatestStreamArn"]
    return Resource(logical_id, "AWS::DynamoDB::Table", name, attributes)


def _throughput(value: Mapping[str, Any] | None) -> dict[str, int]:
    value = value or {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
    return {
        "ReadCapacityUnits": int(value["ReadCapacityUnits"]),
        "WriteCapacityUnits": int(value["WriteCapacityUnits"]),
    }


def create_simple_table(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    key = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
    kind = {"String": "S", "Number": "N", "Binary": "B"}[str(key.get("Type", "String"))]
    table_props: dict[str, Any] = {
        "KeySchema": [{"AttributeName": key["Name"], "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": key["Name"], "AttributeType": kind}],
        "BillingMode": "PAY_PER_REQUEST" if "ProvisionedThroughput" not in props else "PROVISIONED",
    }
    for name in ("TableName", "ProvisionedThroughput", "Tags", "SSESpecification"):
        if name in props:
            table_props[name] = props[name]
    resource = create_table(ctx, logical_id, table_props)
    resource.type = "AWS::Serverless::SimpleTable"
    return resource


def delete_table(ctx: ProviderContext, resource: Resource) -> None:
    _ignore_missing(lambda: ctx.client("dynamodb").delete_table(TableName=resource.physical_id))


# ---------------------------------------------------------------------- IAM, SSM
def create_role(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    iam = ctx.client("iam")
    name = str(props.get("RoleName") or physical_name(ctx.stack_name, logical_id, 64))
    request: dict[str, Any] = {
        "RoleName": name,
        "AssumeRolePolicyDocument": _json(props.get("AssumeRolePolicyDocument", {})),
        "Path": props.get("Path", "/"),
    }
    if "Description" in props:
        request["Description"] = str(props["Description"])
    if "MaxSessionDuration" in props:
        request["MaxSessionDuration"] = int(props["MaxSessionDuration"])
    if "Tags" in props:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(props["Tags"]).items()]
    role = iam.create_role(**request)["Role"]
    for policy in props.get("Policies", []):
        iam.put_role_policy(
            RoleName=name,
            PolicyName=str(policy["PolicyName"]),
            PolicyDocument=_json(policy["PolicyDocument"]),
        )
    if props.get("ManagedPolicyArns"):
        log.info("%s: managed policies are recorded, not attached (IAM is not enforced locally)", logical_id)
    return Resource(logical_id, "AWS::IAM::Role", name, {"Arn": role["Arn"], "RoleId": role["RoleId"]})


def delete_role(ctx: ProviderContext, resource: Resource) -> None:
    iam = ctx.client("iam")

    def remove() -> None:
        for policy in iam.list_role_policies(RoleName=resource.physical_id).get("PolicyNames", []):
            iam.delete_role_policy(RoleName=resource.physical_id, PolicyName=policy)
        iam.delete_role(RoleName=resource.physical_id)

    _ignore_missing(remove)


def create_ssm_parameter(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    name = str(props.get("Name") or physical_name(ctx.stack_name, logical_id, 2048))
    kind = str(props.get("Type", "String"))
    request: dict[str, Any] = {"Name": name, "Type": kind, "Value": str(props["Value"])}
    for key in ("Description", "AllowedPattern", "Tier", "DataType"):
        if key in props:
            request[key] = str(props[key])
    if "Tags" in props:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(props["Tags"]).items()]
    ctx.client("ssm").put_parameter(**request)
    return Resource(logical_id, "AWS::SSM::Parameter", name, {"Type": kind, "Value": str(props["Value"])})


def delete_ssm_parameter(ctx: ProviderContext, resource: Resource) -> None:
    _ignore_missing(lambda: ctx.client("ssm").delete_parameter(Name=resource.physical_id))


def create_secret(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    """A Secrets Manager secret; ``GenerateSecretString`` makes a random one as the service would."""
    name = str(props.get("Name") or physical_name(ctx.stack_name, logical_id, 256))
    if "SecretString" in props:
        value = str(props["SecretString"])
    else:
        spec = props.get("GenerateSecretString") or {}
        length = int(spec.get("PasswordLength", 32))
        excluded = set(str(spec.get("ExcludeCharacters", "")))
        alphabet = [c for c in string.ascii_letters + string.digits if c not in excluded]
        if not spec.get("ExcludePunctuation", False):
            alphabet += [c for c in "!#$%&()*+,-.:;<=>?@[]^_{|}~" if c not in excluded]
        value = "".join(secrets.choice(alphabet) for _ in range(length))
    request: dict[str, Any] = {"Name": name, "SecretString": value}
    if "Description" in props:
        request["Description"] = str(props["Description"])
    if "KmsKeyId" in props:
        request["KmsKeyId"] = str(props["KmsKeyId"])
    arn = ctx.client("secretsmanager").create_secret(**request)["ARN"]
    return Resource(logical_id, "AWS::SecretsManager::Secret", arn, {"Id": arn})


def delete_secret(ctx: ProviderContext, resource: Resource) -> None:
    _ignore_missing(
        lambda: ctx.client("secretsmanager").delete_secret(
            SecretId=resource.physical_id, ForceDeleteWithoutRecovery=True
        )
    )


# ---------------------------------------------------------------------- HealthImaging
def create_datastore(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    ahi = ctx.client("medical-imaging")
    name = str(props.get("DatastoreName") or physical_name(ctx.stack_name, logical_id, 256))
    request: dict[str, Any] = {
        "datastoreName": name,
        "clientToken": physical_name(ctx.stack_name, logical_id, 64),
    }
    if "KmsKeyArn" in props:
        request["kmsKeyArn"] = str(props["KmsKeyArn"])
    if "Tags" in props:
        request["tags"] = _tags(props["Tags"])
    datastore_id = ahi.create_datastore(**request)["datastoreId"]
    deadline = time.monotonic() + 60
    while True:
        properties = ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]
        if properties["datastoreStatus"] == "ACTIVE":
            break
        if properties["datastoreStatus"] == "CREATE_FAILED" or time.monotonic() > deadline:
            raise TemplateError(f"{logical_id}: data store {datastore_id} is {properties['datastoreStatus']}")
        time.sleep(0.02)
    return Resource(
        logical_id,
        "AWS::HealthImaging::Datastore",
        datastore_id,
        {
            "DatastoreId": datastore_id,
            "DatastoreArn": properties["datastoreArn"],
            "DatastoreStatus": properties["datastoreStatus"],
            "CreatedAt": properties["createdAt"].isoformat(),
            "UpdatedAt": properties["updatedAt"].isoformat(),
        },
    )


def delete_datastore(ctx: ProviderContext, resource: Resource) -> None:
    del ctx, resource  # the emulator's state is discarded with the stack's data directory


# ---------------------------------------------------------------------- functions and layers
def create_layer(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    name = str(props.get("LayerName") or physical_name(ctx.stack_name, logical_id, 140))
    arn = f"arn:aws:lambda:{ctx.region}:{ctx.account_id}:layer:{name}:1"
    content = props.get("ContentUri")
    if not isinstance(content, str):
        raise TemplateError(
            f"{logical_id}: ContentUri must be a local folder to run locally, got {content!r}"
        )
    return Resource(logical_id, "AWS::Serverless::LayerVersion", arn, {"Arn": arn}, properties=props)


def create_function(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    name = str(props.get("FunctionName") or physical_name(ctx.stack_name, logical_id, 64))
    arn = f"arn:aws:lambda:{ctx.region}:{ctx.account_id}:function:{name}"
    return Resource(logical_id, "AWS::Serverless::Function", name, {"Arn": arn}, properties=props)


def create_event_source_mapping(ctx: ProviderContext, logical_id: str, props: dict[str, Any]) -> Resource:
    """Recorded: the runtime polls the source for the function (:mod:`local.event_sources`)."""
    source = str(props.get("EventSourceArn", ""))
    if not source.startswith("arn:aws:sqs:"):
        raise TemplateError(f"{logical_id}: only SQS event sources run locally, not {source or 'this one'}")
    batch_size = int(props.get("BatchSize", 10))
    window = float(props.get("MaximumBatchingWindowInSeconds", 0))
    if not 1 <= batch_size <= 10_000:
        raise TemplateError(f"{logical_id}: BatchSize must be 1-10000 for an SQS queue, got {batch_size}")
    if batch_size > 10 and window < 1:
        raise TemplateError(
            f"{logical_id}: a BatchSize above 10 needs MaximumBatchingWindowInSeconds of at least 1 "
            "(Lambda refuses the event source mapping)"
        )
    mapping_id = physical_name(ctx.stack_name, logical_id, 36)
    return Resource(
        logical_id, "AWS::Lambda::EventSourceMapping", mapping_id, {"Id": mapping_id}, properties=props
    )


def _nothing(ctx: ProviderContext, resource: Resource) -> None:
    del ctx, resource


@dataclass(frozen=True)
class Provider:
    create: Create
    delete: Delete = _nothing


PROVIDERS: Final[dict[str, Provider]] = {
    "AWS::KMS::Key": Provider(create_kms_key, delete_kms_key),
    "AWS::KMS::Alias": Provider(create_kms_alias, delete_kms_alias),
    "AWS::S3::Bucket": Provider(create_bucket, delete_bucket),
    "AWS::SQS::Queue": Provider(create_queue, delete_queue),
    "AWS::Events::EventBus": Provider(create_event_bus, delete_event_bus),
    "AWS::Events::Rule": Provider(create_rule, delete_rule),
    "AWS::DynamoDB::Table": Provider(create_table, delete_table),
    "AWS::Serverless::SimpleTable": Provider(create_simple_table, delete_table),
    "AWS::IAM::Role": Provider(create_role, delete_role),
    "AWS::SSM::Parameter": Provider(create_ssm_parameter, delete_ssm_parameter),
    "AWS::SecretsManager::Secret": Provider(create_secret, delete_secret),
    "AWS::HealthImaging::Datastore": Provider(create_datastore, delete_datastore),
    "AWS::Serverless::LayerVersion": Provider(create_layer),
    "AWS::Serverless::Function": Provider(create_function),
    "AWS::Lambda::EventSourceMapping": Provider(create_event_source_mapping),
}

#: Types recorded and skipped: access control, logging and monitoring have no local effect.
NO_LOCAL_MEANING: Final = frozenset(
    {
        "AWS::S3::BucketPolicy",
        "AWS::SQS::QueuePolicy",
        "AWS::SNS::TopicPolicy",
        "AWS::IAM::Policy",
        "AWS::IAM::ManagedPolicy",
        "AWS::KMS::ReplicaKey",
        "AWS::Lambda::Permission",
        "AWS::Lambda::EventInvokeConfig",
        "AWS::Logs::LogGroup",
        "AWS::Logs::MetricFilter",
        "AWS::Logs::SubscriptionFilter",
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::CompositeAlarm",
        "AWS::CloudWatch::Dashboard",
        "AWS::Events::EventBusPolicy",
        "AWS::XRay::Group",
        "AWS::XRay::SamplingRule",
        "AWS::CloudFormation::WaitConditionHandle",
    }
)


def skipped_resource(
    ctx: ProviderContext, logical_id: str, resource_type: str, props: Mapping[str, Any]
) -> Resource:
    """A placeholder for a type with no local meaning: a stable physical id and an ``Arn``."""
    name_keys = ("LogGroupName", "PolicyName", "ManagedPolicyName", "AlarmName", "DashboardName")
    name = next(
        (str(props[k]) for k in name_keys if k in props), physical_name(ctx.stack_name, logical_id, 64)
    )
    service = resource_type.split("::")[1].lower()
    arn = f"arn:aws:{service}:{ctx.region}:{ctx.account_id}:{logical_id.lower()}/{name}"
    return Resource(logical_id, resource_type, name, {"Arn": arn}, skipped=True)
