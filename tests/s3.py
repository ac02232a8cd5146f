"""A real S3 API server for tests: moto's server mode in its own process on a free loopback port.

Nothing is patched: boto3, s3fs and Airflow's `ObjectStoragePath` talk to it over HTTP as to any
S3-compatible endpoint, through an Airflow `aws` connection whose extra carries `endpoint_url`. The
server checks signatures (moto's IAM auth after the first three unauthenticated calls, which create
the test user and its key), so a wrong secret is refused as on AWS.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"erpsync-{os.urandom(4).hex()}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def conn_json(self, *, secret: str | None = None) -> str:
        """The Airflow connection (JSON form of `AIRFLOW_CONN_<ID>`) for this server."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": secret or self.secret_key,
                "extra": {"endpoint_url": self.endpoint, "region_name": REGION},
            }
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_s3(log_path: str | os.PathLike | None = None) -> Iterator[S3Server]:
    """Start `python -m moto.server` with signature checks on; yield it with a user's keys; stop it."""
    import boto3

    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # a TCP connect is no S3 call, so it does not use up the unauthenticated ones
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not listen within 60 s") from None
                time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="boot",
            aws_secret_access_key="boot",
            region_name=REGION,
        )
        iam.create_user(UserName="erpsync")
        key = iam.create_access_key(UserName="erpsync")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="erpsync", PolicyName="all", PolicyDocument=json.dumps(policy))
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            out.close()
