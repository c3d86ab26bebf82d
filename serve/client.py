"""Ask Triton whether transactions are fraud, and say which model run answered.

    python -m serve.client --data data/creditcard_synthetic.csv --rows 5
    python -m serve.client --data my.csv --protocol grpc --json
    python -m serve.client --data my.csv --save response.json   # then: python -m serve.lineage --response response.json

Rows are raw creditcard-schema records (Time, V1..V28, Amount; a Class column is shown beside the answer when
present), sent to Triton exactly as they are: the served model takes raw rows. Only Triton is needed for the
answer: the decision threshold comes from the model's own config (``get_model_config``, FIL's ``threshold``
parameter) and the version from the response. The lineage line ``fraud-classifier/<version> ->
FraudClassifierTreeSelection/<run id>`` is read from the model repository (S3) when it is reachable; when it is
not, a note says so and the answer still stands.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudml.data import FEATURES, LABEL
from fraudml.repository import ModelRepository
from fraudml.storage import StorageError
from fraudml.triton_control import model_config
from serve.lineage import lineage_line
from serve.settings import command_line

INPUT, OUTPUT = "input__0", "output__0"


class ClientError(RuntimeError):
    """Triton could not be reached or refused the request; the message says which."""


@dataclass
class Answer:
    model_name: str
    model_version: int
    probabilities: np.ndarray  # p(fraud) per row


def _client(url: str, protocol: str, timeout: float):
    """(tritonclient module, client, the keyword arguments its calls take) for ``protocol``."""
    if protocol == "grpc":
        import tritonclient.grpc as tc

        return tc, tc.InferenceServerClient(url), {"client_timeout": timeout}
    import tritonclient.http as tc

    return tc, tc.InferenceServerClient(url.split("://", 1)[-1], connection_timeout=timeout,
                                        network_timeout=timeout), {}


def infer(x: np.ndarray, *, url: str, protocol: str = "http", model_name: str, timeout: float = 10.0) -> Answer:
    """One request with the rows of ``x`` (float32, (n, n_features)) over HTTP or gRPC."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    try:
        tc, client, call = _client(url, protocol, timeout)
        inp = tc.InferInput(INPUT, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)  # binary over HTTP too (its default)
        res = client.infer(model_name, [inp], outputs=[tc.InferRequestedOutput(OUTPUT)], **call)
        meta = res.get_response(as_json=True) if protocol == "grpc" else res.get_response()
        name, version = meta["model_name"], meta["model_version"]
        out = res.as_numpy(OUTPUT)
    except Exception as exc:  # noqa: BLE001 - tritonclient raises many types; all become one clear error
        raise ClientError(f"Triton at {url} ({protocol}) failed: {exc}") from exc  # with the status, if any
    proba = out[:, -1] if out.ndim == 2 else out.reshape(-1)
    return Answer(name, int(version), proba.astype(np.float64))


def served_threshold(*, url: str, protocol: str = "http", model_name: str, timeout: float = 10.0) -> float:
    """The decision threshold in the served model's config (FIL parameter ``threshold``)."""
    try:
        if protocol == "grpc":
            _, client, call = _client(url, protocol, timeout)
            config = client.get_model_config(model_name, as_json=True, **call)["config"]
        else:  # the control API's one HTTP client
            config = model_config(url, model_name, timeout)
        return float(config["parameters"]["threshold"]["string_value"])
    except KeyError:
        raise ClientError(f"{model_name} on {url} has no threshold parameter in its config") from None
    except Exception as exc:  # noqa: BLE001 - tritonclient raises many types
        raise ClientError(f"Triton at {url} ({protocol}) did not give the model config: {exc}") from exc


def read_rows(path: str, n: int, seed: int | None) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = [c for c in FEATURES if c not in df.columns]
    if missing:
        raise ClientError(f"{path} lacks columns {missing[:5]}{'…' if len(missing) > 5 else ''}: "
                          "rows need Time, V1..V28, Amount")
    if seed is None:
        return df.head(n)
    if LABEL in df.columns:  # a sample worth looking at: some frauds among the legit rows
        frauds = df[df[LABEL] == 1].sample(min(max(1, n // 3), int(df[LABEL].sum())), random_state=seed)
        legit = df[df[LABEL] == 0].sample(n - len(frauds), random_state=seed)
        return pd.concat([frauds, legit]).sample(frac=1.0, random_state=seed)
    return df.sample(n, random_state=seed)


def main(argv: list[str] | None = None) -> int:
    settings, parser = command_line("serve.client", __doc__)
    parser.add_argument("--data", default="data/creditcard_synthetic.csv", help="CSV of raw rows (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=5, help="how many rows to send (default: %(default)s)")
    parser.add_argument("--first", action="store_true", help="send the first rows instead of a sample with some frauds")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--url", help=f"Triton address (default: {settings.triton.http_url} for http, "
                                      f"{settings.triton.grpc_url} for grpc)")
    parser.add_argument("--model-repo", default=settings.model_repo, help="for lineage (default: %(default)s)")
    parser.add_argument("--model-name", default=settings.model_name)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--save", metavar="FILE", help="write the response with its lineage to FILE")
    args = parser.parse_args(argv)
    url = args.url or (settings.triton.grpc_url if args.protocol == "grpc" else settings.triton.http_url)

    try:
        rows = read_rows(args.data, args.rows, None if args.first else args.seed)
        answer = infer(rows[FEATURES].to_numpy(np.float32), url=url, protocol=args.protocol,
                       model_name=args.model_name)
        threshold = served_threshold(url=url, protocol=args.protocol, model_name=args.model_name)
    except (ClientError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        lineage = ModelRepository(args.model_repo, args.model_name).read_lineage(answer.model_version)
        line = lineage_line(lineage)
    except (StorageError, LookupError, OSError) as exc:
        lineage = {}
        line = f"lineage: not available ({args.model_repo} could not be read: {exc}); the answer needs only Triton"

    labels = rows[LABEL].tolist() if LABEL in rows.columns else [None] * len(rows)
    result: dict[str, Any] = {
        "model_name": answer.model_name,
        "model_version": answer.model_version,
        "threshold": threshold,
        "lineage": {"pathspec": lineage.get("pathspec"),
                    "dataset_fingerprint": lineage.get("dataset", {}).get("fingerprint"), "line": line},
        "rows": [{"p_fraud": float(p), "fraud": bool(p >= threshold), "label": None if y is None else int(y)}
                 for p, y in zip(answer.probabilities, labels, strict=True)],
    }
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'row':>4}  {'p(fraud)':>9}  {'decision':<9} label")
    for i, r in enumerate(result["rows"]):
        label = "" if r["label"] is None else ("fraud" if r["label"] else "legit")
        print(f"{i:>4}  {r['p_fraud']:>9.4f}  {'FRAUD' if r['fraud'] else 'legit':<9} {label}")
    print(f"threshold {threshold:.4f} (chosen by the run; from the model's config.pbtxt)")
    print(result["lineage"]["line"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
