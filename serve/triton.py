"""Local Triton: the real ``tritonserver`` bundled in the nvidia-pytriton wheel (DESIGN §2).

Only the wheel's binary is used: the launcher copies its bundle into the state folder with the Python backend stub
built for this interpreter and our ``fil`` backend (native when it builds here, else Python; ``FIL_BACKEND``,
serve/fil_backend.py), and runs it bound to 127.0.0.1 with explicit model control, so a new version is loaded only
when asked (by its reconciler, or ``python -m serve.models load``).

    python -m serve.triton start  --model-repo s3://models/triton --state-dir .state/triton
    python -m serve.triton status --state-dir .state/triton
    python -m serve.triton stop   --state-dir .state/triton

``start`` runs the server under serve/supervisor.py: a server that crashes (one bad HTTP request can abort
tritonserver 2.51, docs/security.md) is started again on the same ports, at most ``--max-restarts`` times in ten
minutes, each exit logged with its signal; ``stop`` stops the supervisor, the server and its backend processes.
An ``s3://bucket/prefix`` repository is read with the AWS_* variables (local S3:
``set -a; . .state/s3/credentials.env; set +a``); a plain path is a local repository.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit

from prometheus_client.parser import text_string_to_metric_families

from fraudml import triton_control
from fraudml.tritonconfig import MODEL_NAME
from serve.fil_backend import install_fil_backend
from serve.ports import port_in_use
from serve.s3 import read_env_file, s3_client, write_private
from serve.settings import TritonSettings, command_line
from serve.supervisor import Service, ServiceError, is_ready

LAUNCH_FILE = "launch.json"  # what `status` (and a TritonServer attached to it) knows of the running server
LAUNCH_KEYS = ("model_repository", "host", "http_port", "grpc_port", "metrics_port", "load_models", "supervise")
API_KEY_FILE = "api-key.env"  # TRITON_API_KEY of `python -m serve.triton start` (make serve), mode 0600
# the fil backends' gauge and its values (docs/fil_contract.md, "What a version is served with")
COMPILED_METRIC = "fil_compiled"
PREDICTOR_STATES = {1: "compiled", 0: "gtil", -1: "gtil (final)"}
# harmless log lines of a machine without a GPU, left out of error messages
_LOG_NOISE = ("NVML", "DCGM", "CUDA driver", "CudaDriverHelper", "pinned memory", "GPU metrics")


class TritonError(RuntimeError):
    """Triton cannot be started, reached, or cannot load a model; the message says why."""


# -- locating the bundle ------------------------------------------------------------------------
def bundle_paths() -> tuple[Path, Path]:
    """(tritonserver bundle folder, folder of its shared libraries) inside nvidia-pytriton."""
    import importlib.util

    # Located, not imported: only the bundled binary is used, and the wheel is installed
    # without the dependencies of its Python API (requirements.txt, "no-deps").
    spec = importlib.util.find_spec("pytriton")
    if spec is None:
        raise TritonError("the nvidia-pytriton package is not installed; it bundles tritonserver (`make venv`)")
    root = Path(spec.origin).resolve().parent
    if not (root / "tritonserver" / "bin" / "tritonserver").is_file():
        raise TritonError(f"{root}/tritonserver/bin/tritonserver is missing: reinstall nvidia-pytriton")
    return root / "tritonserver", root.parent / "nvidia_pytriton.libs"


# -- repository URIs ----------------------------------------------------------------------------
def triton_repository_uri(model_repo: str, endpoint_url: str | None) -> str:
    """``s3://bucket/prefix`` + endpoint -> Triton's ``s3://http://host:port/bucket/prefix``;
    a local folder -> its absolute path."""
    if model_repo.startswith(("s3://http://", "s3://https://")):
        return model_repo.rstrip("/")
    if model_repo.startswith("s3://"):
        rest = model_repo[len("s3://") :].strip("/")
        if not rest:
            raise TritonError(f"{model_repo!r} names no bucket; use s3://bucket/prefix")
        if not endpoint_url:
            return f"s3://{rest}"  # AWS S3 itself
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise TritonError(f"AWS_ENDPOINT_URL={endpoint_url!r} is not an http(s)://host[:port] URL")
        # Triton reads the endpoint up to the first "/" as host:port; without a port it would
        # take the bucket for one, so the scheme's default port is written out.
        netloc = parts.netloc if parts.port else f"{parts.netloc}:{443 if parts.scheme == 'https' else 80}"
        return f"s3://{parts.scheme}://{netloc}/{rest}"
    path = Path(model_repo).expanduser().absolute()
    if not path.is_dir():
        raise TritonError(f"model repository folder {path} does not exist")
    return str(path)


def check_s3_repository(model_repo: str, env: Mapping[str, str], models: Iterable[str]) -> None:
    """Fail fast with a clear message when an S3 repository cannot serve ``models``."""
    if not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        raise TritonError(f"the model repository {model_repo} is on S3 but AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                          "are not set; for the local S3 run `set -a; . .state/s3/credentials.env; set +a` "
                          "(`make serve` does this) or export your own credentials")
    from botocore.exceptions import BotoCoreError, ClientError

    parts = urlsplit(model_repo.removeprefix("s3://"))  # Triton's s3://http://host:port/bucket/prefix, or AWS's
    endpoint = f"{parts.scheme}://{parts.netloc}" if parts.scheme else env.get("AWS_ENDPOINT_URL") or None
    bucket, _, prefix = parts.path.strip("/").partition("/")
    client = s3_client(endpoint, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                       env.get("AWS_DEFAULT_REGION") or "us-east-1", session_token=env.get("AWS_SESSION_TOKEN"),
                       connect_timeout=3, read_timeout=5)
    for model in models:
        key = "/".join(part for part in (prefix, model, "config.pbtxt") if part)
        try:
            client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                raise TritonError(f"s3://{bucket}/{key} does not exist: no model {model!r} has been published to "
                                  f"{model_repo} yet (run the training flow, `make train`)") from None
            raise TritonError(f"S3 refused to read s3://{bucket}/{key} ({e}); "
                              "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
        except BotoCoreError as e:
            raise TritonError(f"S3 endpoint {endpoint or 'AWS'} is unreachable ({e}); is the local S3 running (`make s3`)?") from None


# -- the server -----------------------------------------------------------------------------------
class TritonServer(Service):
    """A bundled ``tritonserver`` with its copy, pid file and log in ``state_dir``."""

    restart_window_s = 600.0  # the supervisor gives up after max_restarts restarts within this many seconds

    def __init__(self, model_repository: str | Path, *, http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, state_dir: str | Path, env: Mapping[str, str] | None = None,
                 load_models: Iterable[str] = (MODEL_NAME,), host: str = "127.0.0.1",
                 fil_cache_dir: str | Path | None = None, supervise: bool = False, max_restarts: int = 5,
                 extra_args: Iterable[str] = (), api_key: str | None = None, api_key_header: str = "fraudml-api-key"):
        super().__init__(state_dir, "tritonserver")  # tritonserver.pid, .log, ... (serve.supervisor)
        self.model_repository = str(model_repository)
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.extra_env, self.load_models = dict(env or {}), tuple(load_models)
        self.fil_cache_dir = Path(fil_cache_dir).absolute() if fil_cache_dir else None
        self.supervise, self.max_restarts, self.extra_args = supervise, max_restarts, tuple(extra_args)
        # With a key, the model-repository (load/unload), shared-memory, trace and logging APIs
        # of both protocols answer only requests carrying it (docs/security.md, S2).
        self.api_key, self.api_key_header = api_key, api_key_header
        self.startup_seconds: float | None = None
        self.shm_prefix: str | None = None
        if self.is_running():  # attached to the running server: its addresses and models from its launch file
            with contextlib.suppress(FileNotFoundError, ValueError):
                launch = json.loads((self.state_dir / LAUNCH_FILE).read_text())
                for key in set(LAUNCH_KEYS) & launch.keys():
                    setattr(self, key, tuple(launch[key]) if key == "load_models" else launch[key])

    # one place formats Triton's URLs
    _addresses = property(lambda self: TritonSettings(host=self.host, http_port=self.http_port,
                                                      grpc_port=self.grpc_port, metrics_port=self.metrics_port))
    http_url = property(lambda self: self._addresses.http_url)
    grpc_url = property(lambda self: self._addresses.grpc_url)
    metrics_url = property(lambda self: self._addresses.metrics_url)

    # -- preparing ------------------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        for key in ("PYTHONPATH", "PYTHONHOME"):
            env.pop(key, None)  # the stub's embedded Python ignores PYTHONPATH; do not pretend
        # The stub finds its Python prefix from the first `python3` on PATH: the venv's bin
        # (not resolved through symlinks) makes it use the venv's site-packages.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "/usr/bin:/bin")])
        # the stub and backend need libpython3.x.so of the running interpreter
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        libpython = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
        if not (Path(libdir) / libpython).exists():
            raise TritonError(f"{libpython} was not found in {libdir!r}: the Python backend stub needs a Python "
                              "built with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in [libdir, str(bundle_paths()[1]), env.get("LD_LIBRARY_PATH", "")] if p)
        env["FIL_CACHE_DIR"] = str(self.fil_cache_dir or env.get("FIL_CACHE_DIR") or self.state_dir / "fil-cache")
        return env

    def _prepare_server_dir(self) -> Path:
        """Copy the bundle (once per bundle version) and our backend (every start)."""
        bundle, _ = bundle_paths()
        server = self.state_dir / "server"
        marker = server / ".bundle"
        stamp = f"{bundle} {(bundle / 'bin' / 'tritonserver').stat().st_mtime_ns}"
        if not marker.is_file() or marker.read_text() != stamp:
            shutil.rmtree(server, ignore_errors=True)
            shutil.copytree(bundle, server, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
            stub = bundle / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
            if not stub.is_file():
                raise TritonError(f"nvidia-pytriton has no Python backend stub for Python {sys.version_info[:2]} ({stub})")
            shutil.copy2(stub, server / "backends" / "python" / "triton_python_backend_stub")
            marker.write_text(stamp)
        fil = server / "backends" / "fil"
        shutil.rmtree(fil, ignore_errors=True)
        fil.mkdir(parents=True)
        # the native fil backend when it is built or builds here, else the Python one (FIL_BACKEND)
        self.fil_backend = install_fil_backend(fil, {**os.environ, **self.extra_env})
        return server

    def command(self, server_dir: Path, repository_uri: str) -> list[str]:
        args = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={repository_uri}",
            f"--backend-directory={server_dir / 'backends'}",
            f"--cache-directory={server_dir / 'caches'}",
            "--disable-auto-complete-config",  # the config is complete; saves a 1.2 s stub start
            "--model-control-mode=explicit",  # a new version is loaded only when asked (README)
            *(arg for api, port in (("http", self.http_port), ("grpc", self.grpc_port), ("metrics", self.metrics_port))
              for arg in (f"--{api}-address={self.host}", f"--{api}-port={port}")),
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=10",
            # a unique prefix, so several servers on one machine never share Python backend shm
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *(f"--load-model={name}" for name in self.load_models),
        ]
        if self.api_key:
            restriction = f"model-repository,shared-memory,trace,logging:{self.api_key_header}={self.api_key}"
            args += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
        return args + list(self.extra_args)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> TritonServer:
        """Start Triton (or attach to the running one) and wait until it and ``load_models`` are ready;
        TritonError says why not (with the log lines of a model that failed to load)."""
        try:
            if self.is_running() and self.attach(lambda: is_ready(self.ready_urls), timeout, what="tritonserver"):
                return self
            env = self._environment()
            repository_uri = triton_repository_uri(self.model_repository, env.get("AWS_ENDPOINT_URL"))
            if repository_uri.startswith("s3://"):
                check_s3_repository(repository_uri, env, self.load_models)
            for name, port in (("HTTP", self.http_port), ("gRPC", self.grpc_port), ("metrics", self.metrics_port)):
                if port_in_use(port, self.host):
                    raise TritonError(f"{name} port {port} on {self.host} is already in use; choose another (--"
                                      f"{name.lower()}-port / TRITON_{name.upper()}_PORT) or stop what listens there")
            server_dir = self._prepare_server_dir()  # makes state_dir
            Path(env["FIL_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
            self.shm_prefix = f"fraudml_{secrets.token_hex(4)}"
            (self.state_dir / LAUNCH_FILE).write_text(json.dumps({k: getattr(self, k) for k in LAUNCH_KEYS}, indent=2))
            started = time.monotonic()
            self.launch(self.command(server_dir, repository_uri), env=env, ready_urls=self.ready_urls, timeout=timeout,
                        max_restarts=self.max_restarts if self.supervise else 0, window_s=self.restart_window_s,
                        cleanup_globs=[f"/dev/shm/{self.shm_prefix}*"])
        except ServiceError as e:
            raise TritonError(self._failure_message(str(e).split(";", 1)[0])) from None
        self.startup_seconds = time.monotonic() - started
        return self

    def model_ready(self, name: str | None = None) -> bool:  # without a name: the server itself
        return triton_control.is_ready(self.http_url, name, timeout=1.0)

    @property
    def ready_urls(self) -> list[str]:
        """Where every model this server was asked to load answers ready (the server itself, when
        it loads none). Under strict readiness one failed load of a new version makes
        /v2/health/ready fail while the previous version still serves; these do not."""
        return ([f"{self.http_url}/v2/models/{quote(name)}/ready" for name in self.load_models]
                or [f"{self.http_url}/v2/health/ready"])

    def _failure_message(self, headline: str, limit: int = 12, width: int = 600) -> str:
        """``headline`` and what the log says about it: the cause of each failed model load if there is one
        (Python traceback frames dropped), else its last lines without the harmless no-GPU warnings."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        causes = {f"{m[1]}/{m[2]}": m[3].replace("\\n", "\n").split("\n\nAt:", 1)[0].strip()
                  for m in re.finditer(r"failed to load '([^']+)' version (\d+): (.*?)\"?$", text, re.MULTILINE)}
        lines = ([f"model {name} failed to load: {message}" for name, message in causes.items()]
                 or [line[:width] for line in text.splitlines() if not any(n in line for n in _LOG_NOISE)][-limit:])
        return f"{headline}; from {self.log_file}:\n" + "\n".join(lines)

    def predictor_state(self, name: str = MODEL_NAME, settle_s: float = 10.0) -> dict[int, str]:
        """Per loaded version of ``name`` (in version order), what the local ``fil`` backend serves it with, from its
        ``fil_compiled`` gauge (PREDICTOR_STATES, docs/fil_contract.md). A ready model without a series yet (a busy
        machine, the stub's report on its way) is asked again for up to ``settle_s`` seconds; then empty."""
        deadline = time.monotonic() + settle_s
        while True:
            values: dict[int, float] = {}
            with contextlib.suppress(OSError), urllib.request.urlopen(self.metrics_url, timeout=5) as response:
                for family in text_string_to_metric_families(response.read().decode()):
                    for sample in family.samples if family.name == COMPILED_METRIC else ():
                        if sample.labels.get("model") == name:  # Python backend: a series per stub; the least counts
                            version = int(sample.labels["version"])
                            values[version] = min(sample.value, values.get(version, sample.value))
            if values or time.monotonic() > deadline or not self.model_ready(name):
                return {version: PREDICTOR_STATES[int(values[version])] for version in sorted(values)}
            time.sleep(0.1)

    def wait_compiled(self, name: str = MODEL_NAME, timeout: float = 600.0) -> None:
        """Wait until the local ``fil`` backend serves ``name`` (its highest loaded version) with the compiled
        library; TritonError if compilation failed, is off or is too slow."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.predictor_state(name)
            if not state and self.model_ready(name):
                raise TritonError(f"{name} is not served by the local fil backend (no {COMPILED_METRIC} on {self.metrics_url})")
            target = list(state)[-1] if state else None
            current = state.get(target)
            if current == "compiled":
                return
            if current == "gtil (final)":
                raise TritonError(self._failure_message(f"{name}/{target} will stay on GTIL (compilation failed)"))
            if time.monotonic() > deadline:
                raise TritonError(f"{name}/{target} was not compiled within {timeout:.0f} s (state: {current}); see {self.log_file}")
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    settings, parser = command_line("serve.triton", __doc__)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--model-repo", default=settings.model_repo, help="s3://bucket/prefix or a folder (MODEL_REPO)")
    parser.add_argument("--state-dir", default=str(settings.state_dir / "triton"), help="server copy, pid, log")
    parser.add_argument("--http-port", type=int, default=settings.triton.http_port)
    parser.add_argument("--grpc-port", type=int, default=settings.triton.grpc_port)
    parser.add_argument("--metrics-port", type=int, default=settings.triton.metrics_port)
    parser.add_argument("--model", action="append", help=f"model to load (repeatable; default {settings.model_name})")
    parser.add_argument("--fil-cache-dir", default=str(settings.fil_cache_dir or settings.state_dir / "fil-cache"),
                        help="compiled-model cache (FIL_CACHE_DIR)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    parser.add_argument("--no-supervise", action="store_true",
                        help="start tritonserver alone, without the supervisor that restarts it after a crash")
    parser.add_argument("--max-restarts", type=int, default=5, help="restarts within 10 minutes before giving up")
    parser.add_argument("--wait-compiled", action="store_true",
                        help="after start, also wait until the model is served compiled")
    args = parser.parse_args(argv)
    key_file = Path(args.state_dir) / API_KEY_FILE
    # the API key of the server in --state-dir: api-key.env, generated at its first start (`make serve` and
    # `make rollback` read the file: set -a; . <file>)
    api_key = settings.triton.api_key or read_env_file(key_file).get("TRITON_API_KEY")
    if not api_key and args.command == "start":
        api_key = secrets.token_hex(24)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        write_private(key_file, f"TRITON_API_KEY={api_key}\n")

    server = TritonServer(
        args.model_repo, http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
        state_dir=args.state_dir, load_models=args.model or [settings.model_name], host=settings.triton.host,
        fil_cache_dir=args.fil_cache_dir, supervise=not args.no_supervise, max_restarts=args.max_restarts,
        api_key=api_key or None, api_key_header=settings.triton.api_key_header)
    try:
        if args.command == "stop":
            print("Triton stopped" if server.stop() else "Triton was not running")
            return 0
        if args.command == "status":
            return _status(server)
        server.start(timeout=args.timeout)
        if server.startup_seconds is None:  # attached to the running one
            print(f"Triton already running (pid {server.pid()})")
        else:
            print(f"Triton ready in {server.startup_seconds:.1f} s (pid {server.pid()}), "
                  f"models: {', '.join(server.load_models)}")
            if server.supervise:
                print(f"  supervised (pid {server.supervisor_pid()}): restarted after a crash, "
                      f"at most {server.max_restarts} times in {server.restart_window_s / 60:.0f} min")
        print(f"  HTTP    {server.http_url}\n  gRPC    {server.grpc_url}\n  metrics {server.metrics_url}\n"
              f"  log     {server.log_file}")
        if server.api_key and not settings.triton.api_key:
            print(f"  model-repository API key: {key_file} (TRITON_API_KEY)")
        for name in server.load_models if args.wait_compiled else ():
            if server.predictor_state(name):  # a fil model
                started = time.monotonic()
                server.wait_compiled(name)
                print(f"{name} served with the compiled library (waited {time.monotonic() - started:.1f} s)")
    except TritonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _status(server: TritonServer) -> int:
    if server.pid() is None:
        print(f"Triton not running (state dir {server.state_dir})")
        return 1
    ready, health_ready = is_ready(server.ready_urls), server.model_ready()
    health = "" if health_ready == ready else f"; /v2/health/ready says {'ready' if health_ready else 'NOT ready'}"
    print(f"Triton running (pid {server.pid()}, {'ready' if ready else 'NOT ready'}{health}) on {server.model_repository}")
    print(f"  HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}")
    crashes = [e for e in server.supervisor_events() if e["event"] in ("exited", "gave-up")]
    last = f"; last: {crashes[-1].get('how', crashes[-1]['event'])}" if crashes else ""
    print(f"  supervisor pid {server.supervisor_pid()}: {len(crashes)} crash(es) since start{last}")
    models = []
    with contextlib.suppress(triton_control.TritonUnavailable, triton_control.TritonRefused):
        headers = {server.api_key_header: server.api_key} if server.api_key else {}
        models = triton_control.repository_index(server.http_url, headers=headers)
    states = functools.cache(server.predictor_state)  # one /metrics read (and settle wait) per model, not per version
    for m in (m for m in models if m.get("state")):  # not the folders never loaded
        reason = f" ({m['reason'].splitlines()[0]})" if m.get("reason") else ""
        predictor = states(m.get("name", "")).get(int(m.get("version") or 0))
        how = f", {predictor}" if predictor and m.get("state") == "READY" else ""
        print(f"  {m.get('name')}/{m.get('version', '-')}: {m.get('state', '?')}{how}{reason}")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
