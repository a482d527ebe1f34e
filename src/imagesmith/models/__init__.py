"""ORM tables, one per file, re-exported here."""

from imagesmith.models.api_key import ApiKey, KeyType
from imagesmith.models.credit import CreditEntry, CreditKind
from imagesmith.models.end_user import EndUser, RefreshToken
from imagesmith.models.flow import Flow
from imagesmith.models.generation import Generation, GenerationStatus
from imagesmith.models.image import Image, ImageSource
from imagesmith.models.live import LiveScope, PromptCacheEntry
from imagesmith.models.tenancy import Organization, Project
from imagesmith.models.usage import UsageCounter
from imagesmith.models.webhook import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from imagesmith.models.worker import WorkerRecord

__all__ = [
    "ApiKey",
    "CreditEntry",
    "CreditKind",
    "DeliveryStatus",
    "EndUser",
    "Flow",
    "Generation",
    "GenerationStatus",
    "Image",
    "ImageSource",
    "KeyType",
    "LiveScope",
    "Organization",
    "Project",
    "PromptCacheEntry",
    "RefreshToken",
    "UsageCounter",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WorkerRecord",
]
