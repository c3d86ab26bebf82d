"""What operators see: the HPA's custom metric, the alert rules and the Grafana dashboard read
series that exist (Triton's, checked live in tests/integration/test_control_plane.py, and the
reconciler's), and every expression is valid PromQL."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.k8s import manifests as m

# Triton's series the rules and panels may use (seen on the bundled 2.51 with
# --metrics-config=summary_latencies=true, as the start script runs it).
TRITON_SERIES = {"nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                 "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_request_summary_us", "nv_inference_queue_summary_us"}


def alert_rules() -> dict[str, dict]:
    rule = m.one(m.build("overlays/monitored"), "PrometheusRule", "fraudml-triton")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def dashboard() -> dict:
    return json.loads(m.configmap(m.build("monitoring"), "fraudml-grafana-dashboard")["data"]["fraudml-triton.json"])


def adapter_rules() -> dict[str, dict]:
    config = m.one(m.build("monitoring"), "ConfigMap", "fraudml-prometheus-adapter")["data"]["config.yaml"]
    return {r["name"]["as"]: r for r in yaml.safe_load(config)["rules"]}


def promql_expressions() -> dict[str, str]:
    """Every PromQL expression shipped (Grafana and adapter template variables replaced by what they stand for)."""
    out = {f"alert {name}": str(rule["expr"]) for name, rule in alert_rules().items()}
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$namespace", "fraudml")
            out[f"panel {panel['title']} {target['refId']}"] = expr
    for name, rule in adapter_rules().items():
        out[f"adapter {name}"] = (rule["metricsQuery"].replace("<<.GroupBy>>", "pod")
                                  .replace("<<.LabelMatchers>>", 'namespace="fraudml"'))
    return out


@pytest.mark.parametrize("name, expr", sorted(promql_expressions().items()))
def test_every_expression_is_valid_promql(name, expr):
    import promql_parser

    promql_parser.parse(expr)


def test_expressions_read_only_series_that_exist():
    """The Triton (nv_*) and reconciler (fraudml_*) series the expressions read exist."""
    from serve.reconciler import Metrics

    Metrics(registry := CollectorRegistry())
    reconciler = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    used = set(re.findall(r"\b((?:nv|fraudml)_[a-z_]+)\b", " ".join(promql_expressions().values())))
    assert used - TRITON_SERIES - reconciler == set()
    assert {"fraudml_reconciler_served_version", "fraudml_reconciler_converged", "nv_inference_request_summary_us"} <= used


def test_alerts_cover_failures_readiness_queue_time_and_version_skew():
    rules = alert_rules()
    assert set(rules) == {"FraudmlInferenceFailures", "FraudmlModelNotReady", "FraudmlVersionNotConverged",
                          "FraudmlVersionSkew", "FraudmlQueueTimeHigh"}
    assert "fraudml_reconciler_canary" in rules["FraudmlVersionSkew"]["expr"]  # a canary is not skew
    for rule in rules.values():
        assert rule["for"] and rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_the_dashboard_shows_what_an_operator_needs():
    cm = m.configmap(m.build("monitoring"), "fraudml-grafana-dashboard")
    assert cm["metadata"]["name"] == "fraudml-grafana-dashboard" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = dashboard()["panels"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needle in ("nv_inference_request_success", 'quantile="0.5"', 'quantile="0.99"', "nv_inference_queue_duration_us",
                   "nv_inference_exec_count", "nv_inference_request_failure", "fraudml_reconciler_served_version"):
        assert needle in exprs, needle
    assert len({p["id"] for p in panels}) == len(panels)


def test_adapter_rule_defines_the_hpa_metric_per_pod():
    from fraudml.tritonconfig import MODEL_NAME

    rule = adapter_rules()["triton_queue_time_per_request_us"]
    for needle in ("nv_inference_queue_duration_us", "nv_inference_request_success", "<<.LabelMatchers>>",
                   "<<.GroupBy>>", f'model="{MODEL_NAME}"'):
        assert needle in rule["metricsQuery"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
