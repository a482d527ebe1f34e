"""S3-compatible adapter (AWS S3, MinIO, R2, SeaweedFS) on the MinIO SDK, run in threads.

The MinIO SDK signs SigV4, presigns URLs locally, creates buckets and reads credentials the
standard AWS ways (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, the shared
credentials file and AWS_PROFILE, web identity, ECS and EC2 roles). It replaced boto3 because the
API process holds the store for its whole life: boto3 and an S3 client cost it ~24 MB of RSS
(botocore's service models), the MinIO SDK ~6 MB (issue 13's memory goal; figures in
bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import timedelta
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from minio.credentials.providers import (
    AWSConfigProvider,
    ChainedProvider,
    EnvAWSProvider,
    IamAwsProvider,
)
from minio.error import S3Error

from imagesmith.config import Settings
from imagesmith.storage.base import StoredObject

log = logging.getLogger(__name__)
MISSING = {"NoSuchKey", "NoSuchBucket", "NotFound", "ResourceNotFound"}
ALREADY_THERE = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


def _client(settings: Settings) -> Minio:
    endpoint = urlparse(settings.aws_endpoint_url or "https://s3.amazonaws.com")
    if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
        raise ValueError(
            "AWS_ENDPOINT_URL must look like http(s)://host[:port], "
            f"got {settings.aws_endpoint_url!r}"
        )
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=60),
        maxsize=32,
        cert_reqs="CERT_REQUIRED",
        ca_certs=certifi.where(),
        retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    client = Minio(
        endpoint.netloc,
        secure=endpoint.scheme == "https",
        region=settings.aws_region or "us-east-1",
        http_client=http,
        credentials=ChainedProvider([EnvAWSProvider(), AWSConfigProvider(), IamAwsProvider()]),
    )
    if settings.s3_addressing_style == "path":
        client.disable_virtual_style_endpoint()  # type: ignore[no-untyped-call]
    elif settings.s3_addressing_style == "virtual":
        client.enable_virtual_style_endpoint()  # type: ignore[no-untyped-call]
    return client  # "auto": the SDK's choice (virtual-hosted on AWS, path elsewhere)


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
        self.client = _client(settings)
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
        if not self.client.bucket_exists(self.bucket):
            if not self.settings.storage_create_bucket:
                raise RuntimeError(
                    f"S3 bucket {self.bucket!r} does not exist "
                    "(IMAGESMITH_STORAGE_CREATE_BUCKET=false)"
                )
            log.info("storage.create_bucket bucket=%s", self.bucket)
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ALREADY_THERE:  # another process won the race
                    raise
        self._bucket_checked = True

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        def _put() -> None:
            self.ensure_bucket()
            self.client.put_object(
                self.bucket, self._key(key), io.BytesIO(data), len(data), content_type=content_type
            )

        await asyncio.to_thread(_put)

    async def get(self, key: str) -> StoredObject | None:
        def _get() -> StoredObject | None:
            try:
                response = self.client.get_object(self.bucket, self._key(key))
            except S3Error as exc:
                if exc.code in MISSING:
                    return None
                raise
            try:
                body = response.read()
                content_type = response.headers.get("Content-Type") or "application/octet-stream"
            finally:
                response.close()
                response.release_conn()
            return StoredObject(body, content_type)

        return await asyncio.to_thread(_get)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.remove_object, self.bucket, self._key(key))

    async def exists(self, key: str) -> bool:
        def _stat() -> bool:
            try:
                self.client.stat_object(self.bucket, self._key(key))
            except S3Error as exc:
                if exc.code in MISSING:
                    return False
                raise
            return True

        return await asyncio.to_thread(_stat)

    async def check(self) -> None:
        await asyncio.to_thread(self.ensure_bucket)

    def public_url(self, key: str) -> str | None:
        mode = self.settings.storage_url_mode
        if mode == "presigned":
            expires = timedelta(seconds=self.settings.presign_seconds)
            return self.client.presigned_get_object(self.bucket, self._key(key), expires=expires)
        if mode == "public" and self.settings.storage_public_base_url:
            return f"{self.settings.storage_public_base_url.rstrip('/')}/{self._key(key)}"
        return None
