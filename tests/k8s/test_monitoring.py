"""What operators see: the HPA's custom metric, the alert rules and the Grafana dashboard read series that
exist (Triton's, checked live in tests/integration/test_control_plane.py, and the reconciler's), and every
expression is valid PromQL."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from fraudml.tritonconfig import MODEL_NAME
from serve.reconciler import Metrics
from tests.k8s import manifests as m

# Triton's series the rules and panels may use (seen on the bundled 2.51 with
# --metrics-config=summary_latencies=true, as the start script runs it).
TRITON_SERIES = {"nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                 "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_request_summary_us", "nv_inference_queue_summary_us"}


@pytest.mark.parametrize("name, expr", sorted(m.promql_expressions().items()))
def test_every_expression_is_valid_promql(name, expr):
    import promql_parser

    promql_parser.parse(expr)


def test_expressions_read_only_series_that_exist():
    """Offline (make k8s-check): the reconciler's own registry and Triton's known series."""
    Metrics(registry := CollectorRegistry())
    reconciler = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    used = m.metric_names(m.promql_expressions().values())
    assert used - TRITON_SERIES - reconciler == set()
    assert {"fraudml_reconciler_served_version", "fraudml_reconciler_converged",
            "nv_inference_request_summary_us"} <= used


def test_alerts_cover_failures_readiness_queue_time_and_version_skew():
    rules = m.alert_rules()
    assert set(rules) == {"FraudmlInferenceFailures", "FraudmlModelNotReady", "FraudmlVersionNotConverged",
                          "FraudmlVersionSkew", "FraudmlQueueTimeHigh"}
    assert "fraudml_reconciler_canary" in rules["FraudmlVersionSkew"]["expr"]  # a canary is not skew
    for rule in rules.values():
        assert rule["for"] and rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_the_dashboard_shows_what_an_operator_needs():
    cm = m.one(m.build("monitoring"), "ConfigMap", "fraudml-grafana-dashboard")  # no hash suffix: replaced in place
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = m.dashboard()["panels"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needle in ("nv_inference_request_success", 'quantile="0.5"', 'quantile="0.99"',
                   "nv_inference_queue_duration_us", "nv_inference_exec_count", "nv_inference_request_failure",
                   "fraudml_reconciler_served_version"):
        assert needle in exprs, needle
    assert len({p["id"] for p in panels}) == len(panels)


def test_adapter_rule_defines_the_hpa_metric_per_pod():
    (rule,) = [r for r in m.adapter_rules() if r["name"]["as"] == "triton_queue_time_per_request_us"]
    for needle in ("nv_inference_queue_duration_us", "nv_inference_request_success", "<<.LabelMatchers>>",
                   "<<.GroupBy>>", f'model="{MODEL_NAME}"'):
        assert needle in rule["metricsQuery"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
