"""S3-compatible adapter (AWS S3, MinIO, R2, SeaweedFS) on boto3, run in threads.

boto3 is the conservative, well-kept choice: it signs SigV4, presigns URLs locally and reads
credentials the standard way (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / profiles / roles)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from imagesmith.config import Settings
from imagesmith.storage.base import StoredObject

log = logging.getLogger(__name__)
MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class S3Store:
    def __init__(self, settings: Settings):
        assert settings.storage_url is not None
        parsed = urlparse(settings.storage_url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(
                "IMAGESMITH_STORAGE_URL must look like s3://bucket/prefix, "
                f"got {settings.storage_url!r}"
            )
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.settings = settings
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.aws_endpoint_url,
            region_name=settings.aws_region or "us-east-1",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": settings.s3_addressing_style},
                retries={"max_attempts": 5, "mode": "standard"},
                max_pool_connections=32,
            ),
        )
        self._bucket_checked = False

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (
            f" at {self.settings.aws_endpoint_url}" if self.settings.aws_endpoint_url else ""
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing and creating it is allowed."""
        if self._bucket_checked:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in MISSING or not self.settings.storage_create_bucket:
                raise
            log.info("storage.create_bucket bucket=%s", self.bucket)
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as create_exc:
                create_code = create_exc.response.get("Error", {}).get("Code", "")
                if create_code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._bucket_checked = True

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        def _put() -> None:
            self.ensure_bucket()
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )

        await asyncio.to_thread(_put)

    async def get(self, key: str) -> StoredObject | None:
        def _get() -> StoredObject | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) in MISSING:
                    return None
                raise
            body = response["Body"].read()
            return StoredObject(body, response.get("ContentType") or "application/octet-stream")

        return await asyncio.to_thread(_get)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    async def exists(self, key: str) -> bool:
        def _head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) in MISSING:
                    return False
                raise
            return True

        return await asyncio.to_thread(_head)

    async def check(self) -> None:
        await asyncio.to_thread(self.ensure_bucket)

    def public_url(self, key: str) -> str | None:
        mode = self.settings.storage_url_mode
        if mode == "presigned":
            url: str = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=self.settings.presign_seconds,
            )
            return url
        if mode == "public" and self.settings.storage_public_base_url:
            return f"{self.settings.storage_public_base_url.rstrip('/')}/{self._key(key)}"
        return None
