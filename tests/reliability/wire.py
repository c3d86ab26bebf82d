"""Requests exactly as the cases want them on the wire, malformed ones included (tritonclient would
refuse to build them); every call returns a :class:`Reply`, a dropped connection too (``NO_ANSWER``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from fraudml.tritonconfig import MODEL_NAME

NO_ANSWER = "no answer"
INFER = f"/v2/models/{MODEL_NAME}/infer"
JSON = {"Content-Type": "application/json"}
# Triton 2.51's own HTTP front end answers 500 to bodies it cannot parse (docs/security.md R4):
# its code, not ours, so accepted when the message names the problem.
TRITON_FRONTEND_500 = ("failed to parse the request JSON buffer", "Unable to parse")


@dataclass
class Reply:
    status: int | str  # HTTP status, gRPC status name ("OK", "INVALID_ARGUMENT", ...), or NO_ANSWER
    message: str  # the error text ("" when answered)
    body: bytes = b""
    output: np.ndarray | None = None  # output__0 of an answered inference

    @property
    def answered(self) -> bool:
        return self.status in (200, "OK")


def post(url: str, body: bytes | None, headers: dict[str, str] | None = None, *, method: str = "POST",
         timeout: float = 120) -> Reply:
    try:
        response = requests.request(method, url, data=body, headers=JSON if headers is None else headers,
                                    timeout=timeout)
    except requests.RequestException as exc:  # refused, reset, closed mid-request: the server died under it
        return Reply(NO_ANSWER, f"{type(exc).__name__}: {exc}")
    status, data = response.status_code, response.content
    if status != 200:
        try:
            doc = json.loads(data)
            message = str(doc["error"]) if "error" in doc else json.dumps(doc["detail"])
        except (ValueError, TypeError, KeyError):  # not JSON, or not an error document
            message = data.decode(errors="replace")
        return Reply(status, message, data)
    output = None
    if data.startswith(b"{") and b'"outputs"' in data:
        out = json.loads(data)["outputs"][0]
        output = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
    return Reply(status, "", data, output)


def json_body(shape: Any, datatype: str = "FP32", data: Any = None, name: str = "input__0") -> bytes:
    """A KServe v2 JSON inference body (without ``data`` when it is None)."""
    tensor = {"name": name, "shape": shape, "datatype": datatype, **({} if data is None else {"data": data})}
    return json.dumps({"inputs": [tensor]}, allow_nan=True).encode()


def binary_body(shape: list[int], datatype: str, raw: bytes, *, declared_size: int | None = None,
                header_length: int | str | None = None, name: str = "input__0") -> tuple[bytes, dict[str, str]]:
    """A KServe v2 binary-extension body and its headers (``Inference-Header-Content-Length``)."""
    header = json.dumps({
        "inputs": [{"name": name, "shape": shape, "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw) if declared_size is None else declared_size}}],
        "outputs": [{"name": "output__0", "parameters": {"binary_data": False}}],
    }).encode()
    return header + raw, {"Content-Type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(len(header) if header_length is None else header_length)}


def infer(server, protocol: str, shape: list[int], datatype: str = "FP32", data: Any = None, *,
          model: str = MODEL_NAME, version: str = "", name: str = "input__0", headers: dict[str, str] | None = None,
          timeout: float = 120, **binary) -> Reply:
    """One inference request to Triton over ``protocol`` ("http-json", "http-binary", "grpc") declaring
    ``shape``/``datatype``/``name`` whatever ``data`` holds (an array, bytes, a JSON list; None: none)."""
    raw = np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else data
    if protocol == "grpc":
        request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(d - 2**64 if d >= 2**63 else d for d in shape)  # int64 dims: wrapped as a C cast would
        request.raw_input_contents.extend([] if raw is None else [raw])
        with grpc.insecure_channel(server.grpc_url) as channel:
            try:
                response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=timeout)
            except grpc.RpcError as exc:
                return Reply(exc.code().name, exc.details() or "")
        out = response.outputs[0]
        return Reply("OK", "", output=np.frombuffer(response.raw_output_contents[0], np.float32).reshape(out.shape))
    if protocol == "http-binary":
        body, head = binary_body(list(shape), datatype, raw, name=name, **binary)
    else:
        values = data.reshape(-1).tolist() if isinstance(data, np.ndarray) else data
        body, head = json_body(list(shape), datatype, values, name), JSON
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return post(server.http_url + path, body, {**head, **(headers or {})}, timeout=timeout)


def unnamed(text: str, words: tuple[str, ...] | list[str]) -> list[str]:
    """The ``words`` (each ``"a|b"``: either) that ``text`` does not name."""
    return [w for w in words if not any(alt.lower() in text.lower() for alt in w.split("|"))]


def assert_refused(reply: Reply, protocol: str, words: tuple[str, ...] = (),
                   grpc_codes: tuple[str, ...] = ("INVALID_ARGUMENT",)) -> None:
    """A clear refusal: HTTP 4xx (or, but for ``protocol="fastapi"``, Triton's own parser 500), or
    one of ``grpc_codes``, with a message naming every one of ``words`` (each ``"a|b"``: either)."""
    assert reply.status != NO_ANSWER, f"the server did not answer: {reply.message}"
    assert not reply.answered, f"answered {reply.status}: {reply.body[:200]!r}"
    if protocol == "grpc":
        assert reply.status in grpc_codes, f"gRPC {reply.status} (clients retry INTERNAL): {reply.message}"
    else:
        frontend_500 = protocol != "fastapi" and reply.status == 500 and reply.message.startswith(TRITON_FRONTEND_500)
        assert 400 <= reply.status < 500 or frontend_500, f"HTTP {reply.status} (clients retry 5xx): {reply.message}"
    assert reply.message.strip(), f"{reply.status} without an error message"
    missing = unnamed(reply.message, words)
    assert not missing, f"the error does not name {missing}: {reply.message}"
