"""Security checks: no secret in the repository (tracked files, files about to be, history),
the Dockerfiles or the manifests; local servers bind loopback only; the local S3 refuses
anonymous and wrong-credential requests, also around its S3 gateway; a dependency audit.

The secret scanner proves its own rules on planted canaries built at run time (so that no
canary sits in a file for the scanner, or anyone else, to find).
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.reliability_common import Category, Rig, expect, short

ROOT = Path(__file__).resolve().parents[1]
MAX_SCAN_BYTES = 2_000_000


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    canary: str  # a line the rule must flag (assembled at run time)


def _canary(*parts: str) -> str:
    return "".join(parts)


RULES = [
    Rule("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
         _canary("key = ", "AKIA", "Q3EXAMPLE7", "REL1AB")),
    Rule("AWS secret access key assignment",
         re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?(?![$<{])[A-Za-z0-9/+=]{30,}"),
         _canary("AWS_SECRET", "_ACCESS_KEY=", "wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYEXAMPLEKEY")),
    Rule("private key block", re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY-----"),
         _canary("-----BEGIN ", "RSA PRIVATE", " KEY-----")),
    Rule("password literal",
         re.compile(r"(?i)\b[\w.-]*(?:password|passwd|pwd)[\w.-]*[\"']?\s*[:=]\s*[\"']?(?![$<{(%])(?!\s)[^\s\"'#,;)]{4,}"),
         _canary("db_pass", "word = \"hunter2", "hunter2\"")),
    Rule("secret or token literal",
         re.compile(r"(?i)\b[\w-]*(?:secret|token|api[_-]?key)[\w-]*[\"']?\s*[:=]\s*[\"'](?![$<{])[A-Za-z0-9/+=_.\-]{20,}[\"']"),
         _canary("api_", "token = '", "x9f8e7d6c5b4a3f2e1d0c9b8a7", "'")),
    Rule("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"), _canary("gh", "p_", "A1b2C3d4E5" * 4)),
    Rule("Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), _canary("xo", "xb-", "1234567890-abcdefghij")),
    Rule("local SeaweedFS access key (serve.s3 format)", re.compile(r"\bAK[0-9A-F]{18}\b"),
         _canary("AWS_ACCESS_KEY_ID=", "AK", "0123456789ABCDEF01")),
]

# Text that is about secrets without being one (placeholders, variable references).
ALLOWED = re.compile(r"(?i)(\$\{?[A-Z_]+\}?|<[^>]+>|\.\.\.|example|changeme|placeholder|your[-_ ]|xxxx|\*\*\*\*)")


def repo_files(root: Path = ROOT) -> list[Path]:
    """Tracked files plus untracked files that are not ignored (what the next commit can hold)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    files = []
    for name in sorted(set(out.decode().split("\0"))):
        path = root / name
        if name and path.is_file() and path.stat().st_size <= MAX_SCAN_BYTES:
            files.append(path)
    return files


def _is_text(data: bytes) -> bool:
    return b"\0" not in data[:8192]


def scan_text(text: str, rules: list[Rule] = RULES) -> list[tuple[str, int, str]]:
    """(rule name, line number, redacted line) for every hit."""
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        for rule in rules:
            m = rule.pattern.search(line)
            if m and not (rule.name in ("password literal", "secret or token literal") and ALLOWED.search(m.group(0))):
                hits.append((rule.name, number, redact(line, m)))
    return hits


def redact(line: str, m: re.Match) -> str:
    found = m.group(0)
    keep = found[: min(8, len(found) // 3)]
    return short(line.replace(found, keep + "…[redacted]"), 160)


def local_credentials(root: Path, extra_dirs: list[Path]) -> dict[str, str]:
    """Every credentials.env value under .state (and ``extra_dirs``): what must never leak."""
    values: dict[str, str] = {}
    paths = [*root.glob(".state/**/credentials.env"), *(d / "credentials.env" for d in extra_dirs)]
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") and len(value.strip()) >= 8:
                values[f"{path.relative_to(root) if path.is_relative_to(root) else path}:{key.strip()}"] = value.strip()
    return values


def secret_scan(cat: Category, extra_state_dirs: list[Path] | None = None, root: Path = ROOT) -> None:
    files = repo_files(root)
    texts: dict[str, str] = {}
    for path in files:
        data = path.read_bytes()
        if _is_text(data):
            texts[str(path.relative_to(root))] = data.decode(errors="replace")
    cat.facts["secret_scan_files"] = len(texts)

    for rule in RULES:
        with cat.case(f"scanner flags a planted {rule.name}") as note:
            hits = scan_text(rule.canary, [rule])
            expect(hits, f"the rule missed its canary {redact(rule.canary, re.search('.+', rule.canary))}")
            note.detail = "detected"

    for rule in RULES:
        with cat.case(f"no {rule.name} in {len(texts)} repository files") as note:
            hits = [(name, line, text) for name, content in texts.items() for (_r, line, text) in scan_text(content, [rule])]
            note.detail = f"{len(texts)} files scanned"
            expect(not hits, "; ".join(f"{n}:{ln}: {t}" for n, ln, t in hits[:5]))

    values = local_credentials(root, extra_state_dirs or [])
    with cat.case("no local S3 credential value appears in any repository file or in git history") as note:
        if not values:
            note.skipped = "no credentials.env found under .state to compare with"
        leaked = [f"{where} in {name}" for where, value in values.items() for name, content in texts.items() if value in content]
        history = _git_history(root)
        leaked += [f"{where} in git history" for where, value in values.items() if value in history]
        note.detail = f"{len(values)} credential values from {len({k.split(':')[0] for k in values})} credentials.env files checked"
        expect(not leaked, "; ".join(leaked[:5]))

    with cat.case("no secret pattern in git history (every commit's diff)") as note:
        history = _git_history(root)
        hits = [h for h in scan_text(history) if h[0] not in ("password literal", "secret or token literal")]
        note.detail = f"{history.count(chr(10) + 'commit ') + 1} commits scanned"
        expect(not hits, "; ".join(f"{r}: {t}" for r, _, t in hits[:5]))

    with cat.case("credentials.env is ignored by git") as note:
        proc = subprocess.run(["git", "check-ignore", "-q", ".state/s3/credentials.env"], cwd=root)
        expect(proc.returncode == 0, ".state/s3/credentials.env is not git-ignored")
        note.detail = ".state/ is in .gitignore"

    with cat.case("credentials.env is kept out of Docker build contexts") as note:
        ignore = root / ".dockerignore"
        expect(ignore.is_file(), "there is no .dockerignore: `docker build .` would send .state/ (credentials) to the daemon")
        lines = {ln.strip().rstrip("/") for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
        expect(lines & {".state", "/.state", ".state/**", "**/.state"}, ".dockerignore does not exclude .state")
        note.detail = ".dockerignore excludes .state"

    manifests_and_dockerfiles(cat, root)


def _git_history(root: Path) -> str:
    proc = subprocess.run(["git", "log", "--all", "-p", "--no-color", "--no-ext-diff"], cwd=root,
                          capture_output=True, timeout=120)
    return proc.stdout.decode(errors="replace")


SECRET_NAME = re.compile(r"(?i)(secret|password|passwd|token|access_key|api_key|private_key)")


def manifests_and_dockerfiles(cat: Category, root: Path = ROOT) -> None:
    """Credentials only from Secrets (``valueFrom.secretKeyRef``/``envFrom.secretRef``) in the
    manifests; no Secret object with data; no secret-named ENV/ARG with a value in Dockerfiles."""
    import yaml

    manifests = sorted(p for p in (root / "k8s").rglob("*.y*ml") if "schemas" not in p.parts) if (root / "k8s").is_dir() else []
    with cat.case(f"k8s manifests ({len(manifests)} files): secret-named env only from Secrets, no Secret data") as note:
        if not manifests:
            note.skipped = "no k8s/ manifests"
            return
        problems, envs = [], 0
        for path in manifests:
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError:
                continue  # templates with placeholders; the text rules above still scanned them
            for doc in docs:
                for where, item in _walk(doc):
                    if where.endswith(".env") and isinstance(item, list):
                        for env in item:
                            if isinstance(env, dict) and SECRET_NAME.search(str(env.get("name", ""))):
                                envs += 1
                                if "value" in env and str(env.get("value") or "").strip():
                                    problems.append(f"{path.relative_to(root)}: env {env['name']} has a literal value")
                if isinstance(doc, dict) and doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
                    problems.append(f"{path.relative_to(root)}: a Secret with data is committed")
        note.detail = f"{envs} secret-named env entries checked"
        expect(not problems, "; ".join(problems[:5]))

    dockerfiles = sorted(root.rglob("Dockerfile*"))
    dockerfiles = [p for p in dockerfiles if ".venv" not in p.parts and ".state" not in p.parts]
    with cat.case(f"Dockerfiles ({len(dockerfiles)}): no secret-named ENV/ARG with a value, no credentials copied") as note:
        if not dockerfiles:
            note.skipped = "no Dockerfiles"
            return
        problems = []
        for path in dockerfiles:
            for number, line in enumerate(path.read_text().splitlines(), 1):
                m = re.match(r"\s*(ENV|ARG)\s+(\w+)\s*[= ]\s*(\S+)", line)
                if m and SECRET_NAME.search(m.group(2)) and not m.group(3).startswith("$"):
                    problems.append(f"{path.relative_to(root)}:{number}: {m.group(1)} {m.group(2)} has a value")
                if re.search(r"(?i)\b(COPY|ADD)\b.*(\.state|credentials|\.aws|\.env\b)", line):
                    problems.append(f"{path.relative_to(root)}:{number}: copies credentials: {line.strip()}")
        note.detail = f"{len(dockerfiles)} Dockerfiles checked"
        expect(not problems, "; ".join(problems[:5]))


def _walk(node: Any, where: str = "") -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{where}.{key}", value
            yield from _walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, where)


# ------------------------------------------------------------------------------------------
# listening sockets
# ------------------------------------------------------------------------------------------

def _loopback(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def listening_sockets(pid: int) -> list[tuple[str, str, int, int]]:
    """(kind, ip, port, pid) of the TCP listeners and UDP sockets of ``pid`` and its children."""
    import psutil

    out = []
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            if not c.laddr:
                continue
            if c.type == 1 and c.status == psutil.CONN_LISTEN:  # SOCK_STREAM
                out.append(("tcp", c.laddr.ip, c.laddr.port, proc.pid))
            elif c.type == 2 and not c.raddr:  # SOCK_DGRAM, unconnected
                out.append(("udp", c.laddr.ip, c.laddr.port, proc.pid))
    return sorted(set(out))


def bindings(cat: Category, processes: dict[str, int | None]) -> None:
    for name, pid in processes.items():
        if pid is None:
            cat.add(f"{name} binds loopback only", None, "skipped: not running")
            continue
        sockets = listening_sockets(pid)
        with cat.case(f"{name} has listening sockets to check") as note:
            expect(sockets, f"no listening socket found for pid {pid}")
            note.detail = f"{len(sockets)} sockets"
        for kind, ip, port, owner in sockets:
            with cat.case(f"{name} {kind} {ip}:{port} is loopback") as note:
                note.detail = f"pid {owner}"
                expect(_loopback(ip), f"{name} (pid {owner}) listens on {ip}:{port}: reachable from other machines")


# ------------------------------------------------------------------------------------------
# the local S3 refuses who it must
# ------------------------------------------------------------------------------------------

def _raw(method: str, url: str, data: bytes | None = None) -> int:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def s3_auth(rig: Rig, cat: Category, *, filer: bool = True) -> None:
    from botocore.exceptions import ClientError

    s3 = rig.s3
    bucket = s3.bucket
    prefix = rig.repo_uri.removeprefix(f"s3://{bucket}").strip("/")
    config_key = f"{prefix}/fraud-classifier/config.pbtxt" if prefix else "fraud-classifier/config.pbtxt"
    probe_key = f"reliability-probe/{uuid.uuid4().hex}.txt"
    good = s3.client()
    key, _secret = s3._credentials()

    def absent(k: str) -> bool:
        try:
            good.head_object(Bucket=bucket, Key=k)
            return False
        except ClientError:
            return True

    anonymous = [
        ("anonymous bucket listing", "GET", f"{s3.endpoint_url}/{bucket}?list-type=2", None),
        ("anonymous HEAD bucket", "HEAD", f"{s3.endpoint_url}/{bucket}", None),
        ("anonymous read of config.pbtxt", "GET", f"{s3.endpoint_url}/{bucket}/{config_key}", None),
        ("anonymous write", "PUT", f"{s3.endpoint_url}/{bucket}/{probe_key}", b"anonymous"),
        ("anonymous delete of config.pbtxt", "DELETE", f"{s3.endpoint_url}/{bucket}/{config_key}", None),
    ]
    for name, method, url, data in anonymous:
        with cat.case(f"S3 refuses {name}") as note:
            status = _raw(method, url, data)
            note.detail = f"{method} -> {status}"
            expect(status in (401, 403), f"{method} {url} answered {status}")
    with cat.case("the refused requests changed nothing") as note:
        expect(absent(probe_key), f"the anonymous PUT created {probe_key}")
        expect(not absent(config_key), "config.pbtxt is gone after the anonymous DELETE")
        note.detail = "probe object absent, config.pbtxt intact"

    wrong = [
        ("right key id, wrong secret", key, "wrong-" + uuid.uuid4().hex),
        ("unknown key id", "AK" + uuid.uuid4().hex[:18].upper(), uuid.uuid4().hex),
    ]
    for label, access, secret in wrong:
        client = s3.client(access_key=access, secret_key=secret)
        for op, call in (
            ("list", lambda c: c.list_objects_v2(Bucket=bucket, MaxKeys=1)),
            ("read config.pbtxt", lambda c: c.get_object(Bucket=bucket, Key=config_key)),
            ("write", lambda c: c.put_object(Bucket=bucket, Key=probe_key, Body=b"wrong credentials")),
        ):
            with cat.case(f"S3 refuses {op} with {label}") as note:
                try:
                    call(client)
                    raise AssertionError(f"{op} succeeded with {label}")
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "?")
                    note.detail = code
                    expect(code in ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "403"),
                           f"unexpected refusal code {code}")
    with cat.case("wrong-credential writes created nothing; the right credentials work") as note:
        expect(absent(probe_key), f"a wrong-credential PUT created {probe_key}")
        expect(good.get_object(Bucket=bucket, Key=config_key)["Body"].read().startswith(b"#"), "cannot read with the right credentials")
        note.detail = "control request with the server's own credentials succeeded"

    with cat.case("credentials.env is readable by its owner only (0600)") as note:
        mode = s3.credentials_file.stat().st_mode & 0o777
        note.detail = oct(mode)
        expect(mode & 0o077 == 0, f"{s3.credentials_file} has mode {oct(mode)}")

    if filer:
        filer_bypass(rig, cat, config_key)


def filer_bypass(rig: Rig, cat: Category, config_key: str | None = None) -> None:
    """``weed mini`` also runs a filer (HTTP) and volume server on loopback. Without JWT keys
    their HTTP APIs serve and accept the bucket's objects without any credential: S3's
    authentication is then only the front door."""
    if config_key is None:
        prefix = rig.repo_uri.removeprefix(f"s3://{rig.s3.bucket}").strip("/")
        config_key = f"{prefix}/fraud-classifier/config.pbtxt" if prefix else "fraud-classifier/config.pbtxt"
    ports_file = rig.s3.state_dir / "ports"
    try:
        ports = [int(p) for p in ports_file.read_text().split()]
        filer_port = ports[1 + 4]  # serve.s3: s3 port, then master, master grpc, volume, volume grpc, filer
    except (OSError, ValueError, IndexError):
        cat.add("the filer port does not serve the bucket without credentials", None,
                f"skipped: cannot read the internal ports from {ports_file}")
        return
    base = f"http://127.0.0.1:{filer_port}/buckets/{rig.s3.bucket}"
    with cat.case("the SeaweedFS filer does not serve the bucket's objects without credentials") as note:
        status = _raw("GET", f"{base}/{config_key}")
        note.detail = f"GET filer:{filer_port}/buckets/{rig.s3.bucket}/{config_key} -> {status}"
        expect(status in (401, 403), f"anonymous GET through the filer port {filer_port} answered {status}: "
               "config.pbtxt and every model file can be read around S3's authentication "
               "(fix: start weed with WEED_JWT_FILER_SIGNING_KEY/_READ_KEY and WEED_JWT_SIGNING_KEY/_READ_KEY)")
    probe = f"reliability-probe/filer-{uuid.uuid4().hex}.txt"
    with cat.case("the SeaweedFS filer does not accept writes without credentials") as note:
        status = _raw("PUT", f"{base}/{probe}", b"anonymous write through the filer")
        note.detail = f"PUT -> {status}"
        if status in (200, 201):
            _raw("DELETE", f"{base}/{probe}")
        expect(status in (401, 403), f"anonymous PUT through the filer port answered {status}: anyone on this machine "
               "can replace config.pbtxt or a model file")


# ------------------------------------------------------------------------------------------
# dependency audit
# ------------------------------------------------------------------------------------------

# Advisories known to the authors for packages of this venv that requirements*.txt does not
# pin (they come with the interpreter or transitively): package -> (first fixed version, ids).
# Checked against the installed version; an offline floor, not a replacement for pip-audit.
KNOWN_FLOORS = {
    "setuptools": ("78.1.1", "CVE-2022-40897 (fixed 65.5.1), CVE-2024-6345 (fixed 70.0.0), CVE-2025-47273 (fixed 78.1.1)"),
    "pip": ("25.3", "CVE-2025-8869 (fixed 25.3)"),
    "urllib3": ("2.6.0", "CVE-2025-50181/50182 (fixed 2.5.0), CVE-2025-66418/66471 (fixed 2.6.0)"),
    "requests": ("2.32.4", "CVE-2024-47081 (fixed 2.32.4)"),
    "jinja2": ("3.1.6", "CVE-2025-27516 (fixed 3.1.6)"),
    "werkzeug": ("3.1.4", "CVE-2024-49766/49767 (fixed 3.0.6), CVE-2025-66221 (fixed 3.1.4)"),
    "h11": ("0.16.0", "CVE-2025-43859 (fixed 0.16.0)"),
    "starlette": ("0.49.1", "CVE-2025-54121 (fixed 0.47.2), CVE-2025-62727 (fixed 0.49.1)"),
    "protobuf": ("4.25.8", "CVE-2025-4565 (fixed 4.25.8 / 5.29.5 / 6.31.1)"),
    "flask": ("3.1.1", "CVE-2025-47278 (fixed 3.1.1)"),
    "gevent": ("23.9.0", "CVE-2023-41419 (fixed 23.9.0)"),
    "tqdm": ("4.66.3", "CVE-2024-34062 (fixed 4.66.3)"),
    "idna": ("3.7", "CVE-2024-3651 (fixed 3.7)"),
    "certifi": ("2024.7.4", "CVE-2024-39689 (fixed 2024.7.4)"),
    "zipp": ("3.19.1", "CVE-2024-5569 (fixed 3.19.1)"),
    "pillow": ("11.3.0", "CVE-2025-48379 (fixed 11.3.0)"),
    "brotli": ("1.2.0", "CVE-2025-6176 (fixed 1.2.0)"),
    "aiohttp": ("3.12.14", "CVE-2025-53643 (fixed 3.12.14)"),
}


def _pip_audit(args: list[str], timeout: float = 600) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    try:
        doc = json.loads(proc.stdout or "{}")
    except ValueError:
        doc = {}
    deps = doc.get("dependencies", [])
    return {
        "command": " ".join(["pip-audit", *args]),
        "returncode": proc.returncode,
        "audited": [d["name"] for d in deps if "skip_reason" not in d],
        "skipped": {d["name"]: d["skip_reason"] for d in deps if "skip_reason" in d},
        "vulnerabilities": [{"name": d["name"], "version": d.get("version"), "id": v.get("id"),
                             "fix_versions": v.get("fix_versions", []), "aliases": v.get("aliases", [])}
                            for d in deps for v in d.get("vulns", [])],
        "stderr": short(proc.stderr, 400),
    }


def dependency_audit(cat: Category, run_pip_audit: bool = True) -> None:
    """pip-audit against the pinned requirements and the venv; then an offline floor check."""
    from importlib import metadata

    from packaging.version import Version

    runs = {}
    if run_pip_audit:
        targets = {
            "requirements.txt": ["-r", "requirements.txt", "--no-deps", "--disable-pip"],
            "requirements-dev.txt": ["-r", "requirements-dev.txt", "--no-deps", "--disable-pip"],
            "installed venv": ["--local"],
        }
        for label, args in targets.items():
            with cat.case(f"pip-audit {label}") as note:
                try:
                    result = _pip_audit(args)
                except (subprocess.TimeoutExpired, OSError) as exc:
                    note.skipped = f"pip-audit did not finish: {exc}"
                    continue
                runs[label] = result
                vulns = result["vulnerabilities"]
                note.detail = (f"{len(result['audited'])} audited, {len(result['skipped'])} not auditable here, "
                               f"{len(vulns)} known vulnerabilities")
                expect(not vulns, "; ".join(f"{v['name']} {v['version']}: {v['id']} (fix {', '.join(v['fix_versions']) or 'none'})"
                                            for v in vulns[:8]))
                if not result["audited"]:
                    reasons = sorted(set(result["skipped"].values()))
                    note.skipped = ("pip-audit reached no vulnerability data for any package "
                                    f"({short(reasons[0] if reasons else result['stderr'], 160)})")
    cat.facts["pip_audit"] = runs

    for name, (floor, advisories) in sorted(KNOWN_FLOORS.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        with cat.case(f"{name} {installed} is at or above {floor} (known advisories)") as note:
            note.detail = advisories
            expect(Version(installed) >= Version(floor),
                   f"{name} {installed} < {floor}: {advisories}")
