"""Which level of image set metadata each normalized DICOM attribute lives at.

The lists are the service's normalization lists (AWS HealthImaging Developer Guide, DICOM reference,
"metadata normalization"; ``../shared/spec/healthimaging-platform.md`` section 6.2): 140 attributes kept
at the Patient, Study and Series levels.  Every other attribute, private ones included, stays at the
Instance level.  Generated once from the spec; keywords come from pydicom's data dictionary.
"""

from __future__ import annotations

import enum
from typing import Final


class Level(enum.StrEnum):
    """A level of the image set metadata document."""

    PATIENT = "Patient"
    STUDY = "Study"
    SERIES = "Series"
    INSTANCE = "Instance"


_PATIENT_TAGS: Final[tuple[int, ...]] = (
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00100021,  # IssuerOfPatientID
    0x00100024,  # IssuerOfPatientIDQualifiersSequence
    0x00100022,  # TypeOfPatientID
    0x00100030,  # PatientBirthDate
    0x00100033,  # PatientBirthDateInAlternativeCalendar
    0x00100034,  # PatientDeathDateInAlternativeCalendar
    0x00100035,  # PatientAlternativeCalendar
    0x00100040,  # PatientSex
    0x00101100,  # ReferencedPatientPhotoSequence
    0x00100200,  # QualityControlSubject
    0x00081120,  # ReferencedPatientSequence
    0x00100032,  # PatientBirthTime
    0x00101002,  # OtherPatientIDsSequence
    0x00101001,  # OtherPatientNames
    0x00102160,  # EthnicGroup
    0x00104000,  # PatientComments
    0x00102201,  # PatientSpeciesDescription
    0x00102202,  # PatientSpeciesCodeSequence
    0x00102292,  # PatientBreedDescription
    0x00102293,  # PatientBreedCodeSequence
    0x00102294,  # BreedRegistrationSequence
    0x00100212,  # StrainDescription
    0x00100213,  # StrainNomenclature
    0x00100219,  # StrainCodeSequence
    0x00100218,  # StrainAdditionalInformation
    0x00100216,  # StrainStockSequence
    0x00100221,  # GeneticModificationsSequence
    0x00102297,  # ResponsiblePerson
    0x00102298,  # ResponsiblePersonRole
    0x00102299,  # ResponsibleOrganization
    0x00120062,  # PatientIdentityRemoved
    0x00120063,  # DeidentificationMethod
    0x00120064,  # DeidentificationMethodCodeSequence
    0x00100026,  # SourcePatientGroupIdentificationSequence
    0x00100027,  # GroupOfPatientsIdentificationSequence
    0x00120010,  # ClinicalTrialSponsorName
    0x00120020,  # ClinicalTrialProtocolID
    0x00120021,  # ClinicalTrialProtocolName
    0x00120030,  # ClinicalTrialSiteID
    0x00120031,  # ClinicalTrialSiteName
    0x00120040,  # ClinicalTrialSubjectID
    0x00120042,  # ClinicalTrialSubjectReadingID
    0x00120081,  # ClinicalTrialProtocolEthicsCommitteeName
    0x00120082,  # ClinicalTrialProtocolEthicsCommitteeApprovalNumber
)

_STUDY_TAGS: Final[tuple[int, ...]] = (
    0x0020000D,  # StudyInstanceUID
    0x00080020,  # StudyDate
    0x00080030,  # StudyTime
    0x00080090,  # ReferringPhysicianName
    0x00080096,  # ReferringPhysicianIdentificationSequence
    0x0008009C,  # ConsultingPhysicianName
    0x0008009D,  # ConsultingPhysicianIdentificationSequence
    0x00200010,  # StudyID
    0x00080050,  # AccessionNumber
    0x00080051,  # IssuerOfAccessionNumberSequence
    0x00081030,  # StudyDescription
    0x00081048,  # PhysiciansOfRecord
    0x00081049,  # PhysiciansOfRecordIdentificationSequence
    0x00081060,  # NameOfPhysiciansReadingStudy
    0x00081062,  # PhysiciansReadingStudyIdentificationSequence
    0x00321033,  # RequestingService
    0x00321034,  # RequestingServiceCodeSequence
    0x00081110,  # ReferencedStudySequence
    0x00081032,  # ProcedureCodeSequence
    0x00401012,  # ReasonForPerformedProcedureCodeSequence
    0x00081080,  # AdmittingDiagnosesDescription
    0x00081084,  # AdmittingDiagnosesCodeSequence
    0x00101010,  # PatientAge
    0x00101020,  # PatientSize
    0x00101030,  # PatientWeight
    0x00101022,  # PatientBodyMassIndex
    0x00101023,  # MeasuredAPDimension
    0x00101024,  # MeasuredLateralDimension
    0x00101021,  # PatientSizeCodeSequence
    0x00102000,  # MedicalAlerts
    0x00102110,  # Allergies
    0x001021A0,  # SmokingStatus
    0x001021C0,  # PregnancyStatus
    0x001021D0,  # LastMenstrualDate
    0x00380500,  # PatientState
    0x00102180,  # Occupation
    0x001021B0,  # AdditionalPatientHistory
    0x00380010,  # AdmissionID
    0x00380014,  # IssuerOfAdmissionIDSequence
    0x00321066,  # ReasonForVisit
    0x00321067,  # ReasonForVisitCodeSequence
    0x00380060,  # ServiceEpisodeID
    0x00380064,  # IssuerOfServiceEpisodeIDSequence
    0x00380062,  # ServiceEpisodeDescription
    0x00102203,  # PatientSexNeutered
    0x00120050,  # ClinicalTrialTimePointID
    0x00120051,  # ClinicalTrialTimePointDescription
    0x00120052,  # LongitudinalTemporalOffsetFromEvent
    0x00120053,  # LongitudinalTemporalEventType
    0x00120083,  # ConsentForClinicalTrialUseSequence
)

_SERIES_TAGS: Final[tuple[int, ...]] = (
    0x00080060,  # Modality
    0x0020000E,  # SeriesInstanceUID
    0x00200011,  # SeriesNumber
    0x00200060,  # Laterality
    0x00080021,  # SeriesDate
    0x00080031,  # SeriesTime
    0x00081050,  # PerformingPhysicianName
    0x00081052,  # PerformingPhysicianIdentificationSequence
    0x00181030,  # ProtocolName
    0x0008103E,  # SeriesDescription
    0x0008103F,  # SeriesDescriptionCodeSequence
    0x00081070,  # OperatorsName
    0x00081072,  # OperatorIdentificationSequence
    0x00081111,  # ReferencedPerformedProcedureStepSequence
    0x00081250,  # RelatedSeriesSequence
    0x00180015,  # BodyPartExamined
    0x00185100,  # PatientPosition
    0x00280108,  # SmallestPixelValueInSeries
    0x00280109,  # LargestPixelValueInSeries
    0x00400275,  # RequestAttributesSequence
    0x00102210,  # AnatomicalOrientationType
    0x300A0700,  # TreatmentSessionUID
    0x00120060,  # ClinicalTrialCoordinatingCenterName
    0x00120071,  # ClinicalTrialSeriesID
    0x00120072,  # ClinicalTrialSeriesDescription
    0x00080070,  # Manufacturer
    0x00080080,  # InstitutionName
    0x00080081,  # InstitutionAddress
    0x00081010,  # StationName
    0x00081040,  # InstitutionalDepartmentName
    0x00081041,  # InstitutionalDepartmentTypeCodeSequence
    0x00081090,  # ManufacturerModelName
    0x0018100B,  # ManufacturerDeviceClassUID
    0x00181000,  # DeviceSerialNumber
    0x00181020,  # SoftwareVersions
    0x00181008,  # GantryID
    0x0018100A,  # UDISequence
    0x00181002,  # DeviceUID
    0x00181050,  # SpatialResolution
    0x00181200,  # DateOfLastCalibration
    0x00181201,  # TimeOfLastCalibration
    0x00280120,  # PixelPaddingValue
    0x00200052,  # FrameOfReferenceUID
    0x00201040,  # PositionReferenceIndicator
)

NORMALIZED_LEVEL: Final[dict[int, Level]] = {
    **dict.fromkeys(_PATIENT_TAGS, Level.PATIENT),
    **dict.fromkeys(_STUDY_TAGS, Level.STUDY),
    **dict.fromkeys(_SERIES_TAGS, Level.SERIES),
}
"""Tag (as an int, group << 16 | element) to level, for the normalized attributes only."""


def level_of_tag(tag: int) -> Level:
    """Return the metadata level of the attribute ``tag``; Instance for anything not normalized."""
    return NORMALIZED_LEVEL.get(tag, Level.INSTANCE)
