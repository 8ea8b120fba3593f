"""The per-file failure of a DICOM import: one line of ``FAILURE/failure.ndjson``.

An import job records each input file it could not import as
``{"inputFile": ..., "exception": {"exceptionType": ..., "message": ...}}`` (developer guide, "output S3
layout"; ``../shared/spec/healthimaging-api.md`` section 3.5).  Customer errors (the file itself is at
fault) are ``ValidationException`` and count towards ``numberOfFilesWithCustomerError``; failures of the
service are ``InternalServerException`` and count towards ``numberOfFilesWithServerError``.

Messages never carry attribute values that may be PHI: they name tags, keywords, lengths, frame
numbers and transfer syntax UIDs only.
"""

from __future__ import annotations

import enum


class ExceptionType(enum.StrEnum):
    """The ``exceptionType`` of a failed input file."""

    VALIDATION = "ValidationException"
    INTERNAL = "InternalServerException"


class ImportFileError(Exception):
    """One input file failed to import.

    Parameters
    ----------
    exception_type : str
        ``"ValidationException"`` when the file is at fault, ``"InternalServerException"`` when the
        service is.
    message : str
        A precise, human-readable reason that contains no PHI.
    """

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = str(ExceptionType(exception_type))
        self.message = message

    @classmethod
    def validation(cls, message: str) -> ImportFileError:
        """Return a customer error (``ValidationException``)."""
        return cls(ExceptionType.VALIDATION, message)

    @classmethod
    def internal(cls, message: str) -> ImportFileError:
        """Return a server error (``InternalServerException``)."""
        return cls(ExceptionType.INTERNAL, message)

    @property
    def customer_error(self) -> bool:
        """Whether the file is at fault (counts as ``numberOfFilesWithCustomerError``)."""
        return self.exception_type == ExceptionType.VALIDATION

    def as_failure(self) -> dict[str, str]:
        """Return the ``exception`` member of the file's ``failure.ndjson`` line."""
        return {"exceptionType": self.exception_type, "message": self.message}

    def __repr__(self) -> str:
        return f"ImportFileError({self.exception_type!r}, {self.message!r})"
