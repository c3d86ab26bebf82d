"""``fil_server``: one real Triton per FIL_BACKENDS entry (module scope) serving the models of the module's
``fil_repository`` fixture (``(root, [model names])``), its predictor checked first; ``fil_clients``: its Clients.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

FIL_BACKENDS = [("native", "gtil"), ("native", "compiled"), ("python", "gtil"), ("python", "compiled")]


class Clients:
    """tritonclient's HTTP and gRPC clients of one server."""

    modules = {"http": httpclient, "grpc": grpcclient}

    def __init__(self, server):
        self.http = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        self.grpc = grpcclient.InferenceServerClient(server.grpc_url)

    def infer(self, protocol: str, model: str, x: np.ndarray) -> np.ndarray:
        """output__0 of one request holding ``x`` as input__0 (FP32)."""
        tensor = self.modules[protocol].InferInput("input__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return getattr(self, protocol).infer(model, [tensor]).as_numpy("output__0")

    def close(self) -> None:
        self.http.close()
        self.grpc.close()


@pytest.fixture(scope="module", params=FIL_BACKENDS, ids=["-".join(b) for b in FIL_BACKENDS])
def fil_server(request, triton_factory, fil_backend_kind, fil_repository):
    backend, predictor = request.param
    root, models = fil_repository
    server = triton_factory(root, load_models=models, fil_compile=predictor == "compiled",
                            fil_backend=fil_backend_kind(backend))
    for name in models:
        if predictor == "compiled":
            server.wait_compiled(name, timeout=900)
        assert server.predictor_state(name) == {1: predictor}, name
    assert server.fil_backend == backend and ("native backend" in server.log_file.read_text()) == (backend == "native")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fil_clients(fil_server):
    clients = Clients(fil_server)
    yield clients
    clients.close()
