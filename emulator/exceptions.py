"""Errors the emulated service returns, named and coded exactly as botocore's ``medical-imaging`` model.

Every error shape of the model is ``{"message": ...}`` with its HTTP status under ``error.httpStatusCode``;
the class name is the error code the client sees (``ClientError.response["Error"]["Code"]``).  Raise these
from anywhere in the emulator; the HTTP layer turns them into the REST-JSON error response.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """An error returned to the caller as an AWS REST-JSON error."""

    code: ClassVar[str] = "InternalServerException"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationException(ServiceError):
    code = "ValidationException"
    status = 400


class BadRequestException(ServiceError):
    code = "BadRequestException"
    status = 400


class AccessDeniedException(ServiceError):
    code = "AccessDeniedException"
    status = 403


class ResourceNotFoundException(ServiceError):
    code = "ResourceNotFoundException"
    status = 404


class NotAcceptableException(ServiceError):
    code = "NotAcceptableException"
    status = 406


class ConflictException(ServiceError):
    code = "ConflictException"
    status = 409


class ServiceQuotaExceededException(ServiceError):
    code = "ServiceQuotaExceededException"
    status = 402


class ThrottlingException(ServiceError):
    code = "ThrottlingException"
    status = 429


class InternalServerException(ServiceError):
    code = "InternalServerException"
    status = 500


ERRORS_BY_CODE: dict[str, type[ServiceError]] = {
    cls.code: cls
    for cls in (
        ValidationException,
        BadRequestException,
        AccessDeniedException,
        ResourceNotFoundException,
        NotAcceptableException,
        ConflictException,
        ServiceQuotaExceededException,
        ThrottlingException,
        InternalServerException,
    )
}
