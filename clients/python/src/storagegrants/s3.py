"""A boto3 S3 client configured from an AssumeScoped answer alone.

Needs boto3: `pip install 'storage-grants-client[s3]'`.
"""

from __future__ import annotations

from typing import Any, Optional

import boto3
import botocore.config

from storagegrants.v1 import grants_pb2


def s3_client(
    response: grants_pb2.AssumeScopedResponse,
    config: Optional[botocore.config.Config] = None,
    session: Optional[boto3.session.Session] = None,
) -> Any:
    """An S3 client for the prefix of an AssumeScoped answer: its region, its endpoint
    (when the service names one, e.g. an S3-compatible store), path-style addressing
    when it asks for it, and its temporary credentials.

    The credentials only work under `response.prefix` of `response.bucket`. `config`
    is merged over the addressing style (retries, timeouts…); `session` defaults to a
    new one, so the process's default session is left alone. Raises `ValueError` when
    the answer carries no complete credentials.
    """
    credentials = response.credentials
    if not (credentials.access_key_id and credentials.secret_access_key and credentials.session_token):
        raise ValueError("the AssumeScoped answer carries no complete credentials")
    base = botocore.config.Config(s3={"addressing_style": "path" if response.force_path_style else "auto"})
    return (session or boto3.session.Session()).client(
        "s3",
        endpoint_url=response.endpoint or None,
        region_name=response.region,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        config=base.merge(config) if config is not None else base,
    )
