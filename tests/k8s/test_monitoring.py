"""What operators see: the HPA's custom metric, the alert rules and the Grafana dashboard, every expression
valid PromQL (that the series they read exist on Triton and the reconciler: test_control_plane, live)."""

from __future__ import annotations

import pytest

from fraudml.tritonconfig import MODEL_NAME
from tests.k8s import manifests as m


@pytest.mark.parametrize("name, expr", sorted(m.promql_expressions().items()))
def test_every_expression_is_valid_promql(name, expr):
    import promql_parser

    promql_parser.parse(expr)


def test_alerts_cover_failures_readiness_queue_time_and_version_skew():
    rules = m.alert_rules()
    used = m.metric_names(m.promql_expressions().values())  # that each exists: test_control_plane, live
    assert {"fraudml_reconciler_served_version", "fraudml_reconciler_converged",
            "nv_inference_request_summary_us"} <= used
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
