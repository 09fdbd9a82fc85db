#!/usr/bin/env python3
"""Every PromQL expression of the chart parses, and uses only metrics the services (or
RabbitMQ's Prometheus plugin) emit; charts/orderflow/metrics-used.txt lists exactly them.

Usage: check_metrics.py RENDERED.yaml   (a render with the PrometheusRule and dashboards on)
       check_metrics.py --print RENDERED.yaml   (print the derived list instead)

metrics-used.txt is what a running-services test checks against the real /metrics output.
"""
import json
import re
import sys
from pathlib import Path

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "charts/orderflow/metrics-used.txt"

# The metric families the services promise to emit (service contract).
CONTRACT = {
    "http_requests_total", "http_request_duration_seconds",
    "orders_created_total", "orders_created_duration_seconds", "orders_cancelled_total",
    "outbox_backlog", "outbox_oldest_pending_age_seconds", "outbox_published_total",
    "outbox_publish_failures_total",
    "messages_consumed_total", "messages_retried_total", "messages_dead_lettered_total",
    "message_processing_duration_seconds",
    "cache_requests_total", "dependency_up", "notifications_sent_total",
    "queue_messages_ready", "queue_messages_parked",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana variables are not PromQL; substitute plain values before parsing.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": "default"}


def family(name):
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in CONTRACT:
            return name[: -len(suffix)]
    return name


def names_in(expr, where, errors):
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    try:
        ast = promql_parser.parse(expr)
    except ValueError as err:
        errors.append(f"{where}: PromQL does not parse: {err}")
        return set()
    found = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)

    promql_parser.walk(ast, visit)
    return found


RUNBOOKS = ROOT / "docs" / "runbooks.md"


def check_runbook(rule, errors):
    """The alert links to its own section of docs/runbooks.md (anchors as Git hosts make them)."""
    url = rule.get("annotations", {}).get("runbook_url", "")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    anchor = url.rpartition("#")[2]
    if anchor != rule["alert"].lower():
        errors.append(f"alert {rule['alert']}: runbook_url {url!r} does not point at its own section")
    elif anchor not in anchors:
        errors.append(f"alert {rule['alert']}: {RUNBOOKS.relative_to(ROOT)} has no section #{anchor}")


def main():
    args = sys.argv[1:]
    show = args and args[0] == "--print"
    rendered = args[-1]
    errors, used = [], set()
    rules = dashboards = 0
    for doc in yaml.safe_load_all(open(rendered)):
        if not doc:
            continue
        if doc["kind"] == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                for rule in group["rules"]:
                    rules += 1
                    used |= names_in(rule["expr"], f"rule {rule.get('alert') or rule.get('record')}", errors)
                    if "alert" in rule:
                        check_runbook(rule, errors)
        if doc["kind"] == "ConfigMap" and doc["metadata"].get("labels", {}).get("grafana_dashboard"):
            for key, text in doc["data"].items():
                dashboards += 1
                for panel in json.loads(text)["panels"]:
                    for target in panel.get("targets", []):
                        used |= names_in(target["expr"], f"{key} panel '{panel['title']}'", errors)
    if not rules or not dashboards:
        errors.append(f"{rendered}: needs a PrometheusRule and dashboards (found {rules} rules, {dashboards} dashboards)")
    for name in sorted(used):
        if family(name) not in CONTRACT and not name.startswith("rabbitmq_"):
            errors.append(f"{name}: not a metric the services or RabbitMQ emit")
    if show:
        print("\n".join(sorted(used)))
        return
    listed = {l.strip() for l in LIST.read_text().splitlines() if l.strip() and not l.startswith("#")}
    for name in sorted(used - listed):
        errors.append(f"{name}: used by rules/dashboards but missing from {LIST.relative_to(ROOT)}")
    for name in sorted(listed - used):
        errors.append(f"{name}: listed in {LIST.relative_to(ROOT)} but used nowhere")
    for e in errors:
        print("FAIL", e)
    print(f"metrics: {rules} alert rules and {dashboards} dashboard(s) use {len(used)} metric names; {len(errors)} problems")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
