"""Security (docs/security.md): no secret (``detect-secrets``, against the committed baseline) and no local
credential value in the tree or its history, Dockerfiles take no credentials (the manifests:
tests/k8s/test_security.py), loopback-only servers, the local S3's refusals (S1), ``pip-audit`` (D1).
A finding that is not a secret goes into the baseline: ``python -m tests.reliability.test_security``
rewrites it from the tree and the history (review the diff before committing it)."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path

import psutil
import pytest
from botocore.exceptions import ClientError
from detect_secrets import SecretsCollection
from detect_secrets.core import baseline
from detect_secrets.settings import transient_settings
from packaging.version import Version

from fraudml.tritonconfig import MODEL_NAME
from serve.s3 import read_env_file
from tests.reliability.rig import Rig
from tests.reliability.wire import post

ROOT = Path(__file__).resolve().parents[2]
BASELINE = Path(__file__).with_name(".secrets.baseline")


# -- secrets in the tree and its history ---------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def repository_files() -> list[str]:
    """Tracked files and untracked ones that are not ignored: what the next commit can hold."""
    names = set(git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0"))
    return sorted(n for n in names if n and (ROOT / n).is_file() and ROOT / n != BASELINE)


def scan(files: list[str] | None = None, *, history: bool = False) -> SecretsCollection:
    """detect-secrets with the baseline's plugins and filters, over ``files`` (default: the
    repository's) or over every commit's diff (but the baseline's)."""
    found = SecretsCollection(root=str(ROOT))
    with transient_settings(json.loads(BASELINE.read_text())):
        if history:
            found.scan_diff(git("log", "--all", "-p", "--format=", "--no-color", "--no-ext-diff", "--", ".",
                                f":!{BASELINE.relative_to(ROOT)}"))
        else:
            found.scan_files(*(files or repository_files()))
    return found


@pytest.mark.parametrize("history", [pytest.param(False, marks=pytest.mark.quick, id="repository"),
                                     pytest.param(True, id="git history")])
def test_no_secret_beyond_the_baseline(history):
    # Matched on (file relative to the repository, hashed secret, type): detect-secrets' own
    # set difference also compares each secret's path as scanned, which is absolute with a root
    # and would tie the baseline to one checkout's location.
    known = {(name, s.secret_hash, s.type)
             for name, s in SecretsCollection.load_from_baseline(json.loads(BASELINE.read_text()))}
    new = [f"{name}:{s.line_number}: {s.type}" for name, s in scan(history=history)
           if (name, s.secret_hash, s.type) not in known]
    assert not new, f"detect-secrets found {new}; if they are not secrets, update {BASELINE.name} (module docstring)"


@pytest.mark.quick
def test_the_scanner_flags_planted_secrets(tmp_path):
    canary = tmp_path / "canary.py"  # assembled here, so that no file holds a canary for anyone to find
    canary.write_text("key = '" + "AKIA" + "Q3EXAMPLE7REL1AB'\n" + "-----BEGIN " + "RSA PRIVATE KEY-----\n")
    found = {secret.type for _, secret in scan([str(canary)])}
    assert {"AWS Access Key", "Private Key"} <= found, found


@pytest.mark.quick
def test_no_local_s3_credential_value_in_the_repository_or_its_history(rig):
    values = {value: f"{path.name}:{key}"
              for path in [*ROOT.glob(".state/**/*credentials.env"), *rig.s3.state_dir.glob("*credentials.env")]
              for key, value in read_env_file(path).items()
              if key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") and len(value) >= 8}
    texts = {name: (ROOT / name).read_bytes().decode(errors="replace") for name in repository_files()}
    texts["git history"] = git("log", "--all", "-p", "--no-color", "--no-ext-diff")
    leaked = [f"{where} in {name}" for value, where in values.items() for name, text in texts.items() if value in text]
    assert values and not leaked, leaked or "no credentials.env to compare with"


@pytest.mark.quick
def test_credentials_are_kept_out_of_git_and_docker_build_contexts():
    assert subprocess.run(["git", "check-ignore", "-q", ".state/s3/credentials.env"], cwd=ROOT).returncode == 0
    lines = {ln.strip().rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    assert lines & {".state", "/.state", ".state/**", "**/.state"}, ".dockerignore does not exclude .state"


# ENV/ARG giving a secret-named variable a literal value (not ${...}), or a COPY/ADD of local credentials
CREDENTIAL_LINE = re.compile(r"(?i)^\s*(ENV|ARG)\s+\w*(secret|password|passwd|token|access_key|api_key|private_key)"
                             r"\w*\s*[= ]\s*[^$\s]|\b(COPY|ADD)\b.*(\.state|credentials|\.aws|\.env\b)")


@pytest.mark.quick
def test_dockerfiles_set_and_copy_no_credentials():
    problems = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                for path in sorted(p for p in ROOT.rglob("Dockerfile*") if not {".venv", ".state"} & set(p.parts))
                for number, line in enumerate(path.read_text().splitlines(), 1) if CREDENTIAL_LINE.search(line)]
    assert not problems, problems


# -- local servers --------------------------------------------------------------------------


@pytest.mark.quick
@pytest.mark.parametrize("server", ["weed (SeaweedFS S3)", "tritonserver", "uvicorn (FastAPI baseline)"])
def test_local_server_listens_on_loopback_only(rig, fastapi_url, server):
    pid = {"weed (SeaweedFS S3)": rig.s3.pid(), "tritonserver": rig.triton.pid(),
           "uvicorn (FastAPI baseline)": rig.fastapi_pid}[server]
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    sockets = sorted({(c.laddr.ip, c.laddr.port, p.pid) for p in processes for c in p.net_connections("inet")
                      if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr)})
    assert sockets, f"no listening socket found for pid {pid}"
    # gRPC listens on the IPv4-mapped ::ffff:127.0.0.1, which Python 3.11 does not call loopback
    exposed = [s for s in sockets if not ipaddress.ip_address(s[0].split("%")[0].removeprefix("::ffff:")).is_loopback]
    assert not exposed, f"reachable from other machines: {exposed}"


def absent(rig, key: str) -> bool:
    return rig.s3.client().list_objects_v2(Bucket=rig.s3.bucket, Prefix=key)["KeyCount"] == 0


PROBE = f"reliability-probe/{uuid.uuid4().hex}.txt"
CONFIG = f"{Rig.repo_uri.split('/', 3)[3]}/{MODEL_NAME}/config.pbtxt"  # the rig's, as a key in its bucket
# S1: `weed mini` also runs a filer on loopback whose HTTP API, without JWT keys, served and
# accepted the bucket's objects with no credential at all.
ANONYMOUS = {  # name: (method, URL below {s3} (the bucket) or {filer} (the bucket's folder), body)
    "bucket listing": ("GET", "{s3}?list-type=2", None),
    "HEAD bucket": ("HEAD", "{s3}", None),
    "read of config.pbtxt": ("GET", "{s3}/{config}", None),
    "write": ("PUT", "{s3}/{probe}", b"anonymous"),
    "delete of config.pbtxt": ("DELETE", "{s3}/{config}", None),
    "read of config.pbtxt around the gateway (filer port)": ("GET", "{filer}/{config}", None),
    "write around the gateway (filer port)": ("PUT", "{filer}/{probe}", b"anonymous write through the filer"),
}


@pytest.mark.quick
@pytest.mark.parametrize("name", ANONYMOUS)
def test_s3_refuses_anonymous_requests(rig, name):
    method, url, body = ANONYMOUS[name]
    filer_port = int((rig.s3.state_dir / "ports").read_text().split()[5])  # s3, master (2), volume (2), filer
    url = url.format(s3=f"{rig.s3.endpoint_url}/{rig.s3.bucket}", filer=f"http://127.0.0.1:{filer_port}/buckets/"
                     f"{rig.s3.bucket}", config=CONFIG, probe=PROBE)
    reply = post(url, body, {}, method=method, timeout=10)
    if reply.status in (200, 201) and method == "PUT":
        rig.s3.client().delete_object(Bucket=rig.s3.bucket, Key=PROBE)  # this case fails, the next ones need no cleanup
    assert reply.status in (401, 403), f"anonymous {method} {url} answered {reply.status}"
    assert absent(rig, PROBE) and not absent(rig, CONFIG), "a refused request changed the bucket"


@pytest.mark.quick
@pytest.mark.parametrize("operation", ["list", "read config.pbtxt", "write"])
@pytest.mark.parametrize("credentials", ["right key id, wrong secret", "unknown key id"])
def test_s3_refuses_wrong_credentials(rig, credentials, operation):
    key = rig.s3.env()["AWS_ACCESS_KEY_ID"] if credentials.startswith("right") else "AK" + uuid.uuid4().hex[:18].upper()
    client = rig.s3.client(access_key=key, secret_key=uuid.uuid4().hex)
    call = {"list": lambda: client.list_objects_v2(Bucket=rig.s3.bucket, MaxKeys=1),
            "read config.pbtxt": lambda: client.get_object(Bucket=rig.s3.bucket, Key=CONFIG),
            "write": lambda: client.put_object(Bucket=rig.s3.bucket, Key=PROBE, Body=b"wrong credentials")}[operation]
    with pytest.raises(ClientError) as info:
        call()
    code = info.value.response["Error"]["Code"]
    assert code in ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "403"), code
    assert absent(rig, PROBE), "a wrong-credential write created an object"
    rig.s3.client().get_object(Bucket=rig.s3.bucket, Key=CONFIG)  # the right credentials still work


# -- dependencies ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["requirements.txt", "requirements-dev.txt", "installed venv"])
def test_pip_audit_finds_no_known_vulnerability(target):
    args = ["--local"] if target == "installed venv" else ["-r", target, "--no-deps", "--disable-pip"]
    proc = subprocess.run([sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    deps = json.loads(proc.stdout or "{}").get("dependencies", [])  # no output: it failed (stderr says why)
    vulns = [f"{d['name']} {d.get('version')}: {v['id']} (fix {v.get('fix_versions')})"
             for d in deps for v in d.get("vulns", [])]
    assert not vulns, vulns
    if not [d for d in deps if "skip_reason" not in d]:
        reasons = sorted({d["skip_reason"] for d in deps if "skip_reason" in d}) or [proc.stderr.strip()[-300:]]
        pytest.skip(f"pip-audit reached no vulnerability data for any package ({reasons[0][:200]})")


# Advisories for packages of this venv that requirements*.txt does not pin (they come with the
# interpreter or transitively): an offline floor, checked where pip-audit cannot reach its data (D1).
KNOWN_FLOORS = {
    "setuptools": ("78.1.1", "CVE-2022-40897, CVE-2024-6345, CVE-2025-47273"),
    "pip": ("25.3", "CVE-2025-8869"),
    "urllib3": ("2.6.0", "CVE-2025-50181/50182, CVE-2025-66418/66471"),
    "requests": ("2.32.4", "CVE-2024-47081"),
    "jinja2": ("3.1.6", "CVE-2025-27516"),
    "werkzeug": ("3.1.4", "CVE-2024-49766/49767, CVE-2025-66221"),
    "h11": ("0.16.0", "CVE-2025-43859"),
    "starlette": ("0.49.1", "CVE-2025-54121, CVE-2025-62727"),
    "protobuf": ("4.25.8", "CVE-2025-4565"),
    "flask": ("3.1.1", "CVE-2025-47278"),
    "gevent": ("23.9.0", "CVE-2023-41419"),
    "tqdm": ("4.66.3", "CVE-2024-34062"),
    "idna": ("3.7", "CVE-2024-3651"),
    "certifi": ("2024.7.4", "CVE-2024-39689"),
    "zipp": ("3.19.1", "CVE-2024-5569"),
    "pillow": ("11.3.0", "CVE-2025-48379"),
    "brotli": ("1.2.0", "CVE-2025-6176"),
    "aiohttp": ("3.12.14", "CVE-2025-53643"),
}


@pytest.mark.quick
@pytest.mark.parametrize("package", KNOWN_FLOORS)
def test_installed_package_is_past_its_known_advisories(package):
    floor, advisories = KNOWN_FLOORS[package]
    try:
        installed = metadata.version(package)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{package} is not installed")
    assert Version(installed) >= Version(floor), f"{package} {installed} < {floor}: {advisories}"


if __name__ == "__main__":  # rewrite the baseline (its plugins and filters) from the tree and the history
    found = scan()
    for filename, secret in scan(history=True):
        found[filename].add(secret)
    with transient_settings(json.loads(BASELINE.read_text())):
        baseline.save_to_file(found, str(BASELINE))
    print(f"wrote {BASELINE.relative_to(ROOT)}: {sum(1 for _ in found)} findings; review each before committing")
