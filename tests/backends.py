"""Which stack the suite runs on. By default: SQLite + local folder + in-process state. With
IMAGESMITH_TEST_POSTGRES / _S3_ENDPOINT / _REDIS set (see .ci/run), every server gets its own
fresh PostgreSQL database, its own S3 bucket, and the shared Redis."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

POSTGRES = os.environ.get("IMAGESMITH_TEST_POSTGRES")
S3_ENDPOINT = os.environ.get("IMAGESMITH_TEST_S3_ENDPOINT")
REDIS = os.environ.get("IMAGESMITH_TEST_REDIS")


def create_database() -> str:
    import psycopg

    assert POSTGRES is not None
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return POSTGRES.rsplit("/", 1)[0] + f"/{name}"


def new_backend(data_dir: Path) -> dict[str, str]:
    """Environment for one server (and anything sharing its state)."""
    env: dict[str, str] = {}
    if POSTGRES:
        env["IMAGESMITH_DATABASE_URL"] = create_database()
    if S3_ENDPOINT:
        env["IMAGESMITH_STORAGE_URL"] = f"s3://t-{uuid.uuid4().hex[:12]}/images"
        env["AWS_ENDPOINT_URL"] = S3_ENDPOINT
    if REDIS:
        env["IMAGESMITH_REDIS_URL"] = REDIS
    return env


def database_url(env: dict[str, str], data_dir: Path) -> str:
    return env.get("IMAGESMITH_DATABASE_URL") or f"sqlite:///{data_dir / 'imagesmith.db'}"


def run_sql(env: dict[str, str], data_dir: Path, statement: str, **params: Any) -> list[Any]:
    from sqlalchemy import create_engine, text

    url = database_url(env, data_dir).replace("postgresql://", "postgresql+psycopg://")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def stored_keys(env: dict[str, str], data_dir: Path) -> set[str]:
    """Every object the server's store holds (relative keys, sidecars excluded)."""
    storage_url = env.get("IMAGESMITH_STORAGE_URL")
    if storage_url and storage_url.startswith("s3://"):
        import boto3

        bucket, prefix = storage_url.removeprefix("s3://").split("/", 1)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        keys: set[str] = set()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys |= {obj["Key"].removeprefix(prefix + "/") for obj in page.get("Contents", [])}
        except client.exceptions.NoSuchBucket:  # made on the first write: nothing stored yet
            return set()
        return keys
    root = data_dir / "images"
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not path.name.endswith(".type") and not path.name.startswith(".")
    }


def break_store(env: dict[str, str], data_dir: Path) -> None:
    """Make every later write to the server's store fail: its bucket deleted, for a server
    started with `storage_create_bucket=False` (S3), or its folder replaced by a file (local)."""
    storage_url = env.get("IMAGESMITH_STORAGE_URL")
    if storage_url and storage_url.startswith("s3://"):
        import boto3

        bucket = storage_url.removeprefix("s3://").split("/", 1)[0]
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        assert env.get("IMAGESMITH_STORAGE_CREATE_BUCKET") == "False", "it would make it again"
        with contextlib.suppress(client.exceptions.NoSuchBucket):  # made on the first write
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
            client.delete_bucket(Bucket=bucket)
        return
    import shutil

    root = data_dir / "images"
    shutil.rmtree(root, ignore_errors=True)
    root.write_text("not a folder")


def repair_store(env: dict[str, str], data_dir: Path) -> None:
    """Undo `break_store`: the bucket made again (S3), or the folder back in place (local)."""
    storage_url = env.get("IMAGESMITH_STORAGE_URL")
    if storage_url and storage_url.startswith("s3://"):
        import boto3

        bucket = storage_url.removeprefix("s3://").split("/", 1)[0]
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        return
    root = data_dir / "images"
    root.unlink()
    root.mkdir()
