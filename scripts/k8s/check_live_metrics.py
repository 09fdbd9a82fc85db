#!/usr/bin/env python3
"""A real Prometheus scrapes the release binaries and RabbitMQ 4's metrics endpoint, each target
with the labels the chart's ServiceMonitors give it (namespace, service, pod, job, endpoint,
container). After a short load that also passes through a database outage (5xx answers), webhook
retries and a parked notification, every query of the chart's Grafana dashboards must return data
and every alert expression must evaluate without error.

Usage: check_live_metrics.py RENDERED.yaml BINARIES_DIR NAME
  RENDERED.yaml  the chart rendered with monitoring on and values.queues set to NAME.<queue>
  NAME           prefix of everything this check creates (databases, exchange, queues, Redis keys)

Needs the servers of `make servers`: MariaDB :3306, Redis :6379, RabbitMQ 4 on :5673 with its
metrics on :15693 (scripts/rabbitmq4.sh), and Debian's prometheus.
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pika
import yaml

ROOT = Path(__file__).resolve().parents[2]
AMQP = "amqp://guest:guest@127.0.0.1:5673/%2f"
RABBITMQ_METRICS = "127.0.0.1:15693"
COMPONENTS = ("order-service", "analytics-service", "notification-worker")
# Grafana's variables, as a dashboard on a 1 s scrape interval would fill them in.
RATE_INTERVAL = "30s"
ORDERS = 150
CANCELLED = 15


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def mariadb(sql):
    subprocess.run(["mariadb", "-h127.0.0.1", "-uroot", "-e", sql], check=True)


class Chart:
    """What the rendered chart says: namespace, each component's Service, queries and alerts."""

    def __init__(self, rendered):
        documents = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
        rule = next(d for d in documents if d["kind"] == "PrometheusRule")
        self.namespace = rule["metadata"]["namespace"]
        self.alerts = [(r["alert"], r["expr"]) for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
        self.services = {}
        for monitor in (d for d in documents if d["kind"] == "ServiceMonitor"):
            component = monitor["metadata"]["labels"].get("app.kubernetes.io/component")
            self.services[component] = monitor["metadata"]["name"]
        self.queries = []
        for config_map in (d for d in documents if d["kind"] == "ConfigMap"):
            for key, text in (config_map.get("data") or {}).items():
                if key.endswith(".json"):
                    dashboard = json.loads(text)
                    for panel in dashboard.get("panels", []):
                        for target in panel.get("targets", []):
                            if target.get("expr"):
                                self.queries.append((f"{key}: {panel['title']}", target["expr"]))

    def query(self, expr):
        for variable, value in (("$__rate_interval", RATE_INTERVAL), ("$namespace", self.namespace)):
            expr = expr.replace(variable, value)
        return expr


class Proxy:
    """A TCP proxy that can cut every connection and refuse new ones, for a database outage."""

    def __init__(self, upstream_port):
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.connections = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            if not self.open:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self.connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self.pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.open = False
        for sock in self.connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connections = []

    def restore(self):
        self.open = True


class Webhook(http.server.ThreadingHTTPServer):
    """A receiver that refuses the first call for good (parked) and the next two for now (retried)."""

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.calls += 1
                    call = outer.calls
                self.send_response(410 if call == 1 else 503 if call <= 3 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Check:
    def __init__(self, rendered, binaries, name):
        self.chart = Chart(rendered)
        self.binaries = Path(binaries)
        self.name = name
        self.databases = {"order-service": f"oftest_{name}_orders", "analytics-service": f"oftest_{name}_analytics"}
        self.processes = []
        self.ports = {}
        self.work = Path(tempfile.mkdtemp(prefix=f"{name}-"))

    def environment(self, component, webhook_url, order_db_port):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SERVICE_PORT": str(self.ports[component]),
            "ORDERFLOW_HTTP__HOST": "127.0.0.1",
            "LOG_LEVEL": "warn",
            "REDIS_URL": "redis://127.0.0.1:6379",
            "ORDERFLOW_REDIS__KEY_PREFIX": f"{self.name}:",
            "RABBITMQ_URL": AMQP,
            "ORDERFLOW_RABBITMQ__EXCHANGE": f"{self.name}.orders",
            "ORDERFLOW_RABBITMQ__RETRY_DELAYS_MS": "200,500",
            "ORDERFLOW_QUEUES__ANALYTICS": f"{self.name}.analytics.orders",
            "ORDERFLOW_QUEUES__NOTIFICATIONS": f"{self.name}.notifications.orders",
            "ORDERFLOW_QUEUES__ORDER_PROCESSED": f"{self.name}.orders.processed",
            "NOTIFY_CHANNELS": "log,webhook",
            "WEBHOOK_URL": webhook_url,
            "WEBHOOK_SECRET": "live-metrics",
        }
        if component == "order-service":
            env["DATABASE_URL"] = f"mysql://root@127.0.0.1:{order_db_port}/{self.databases[component]}"
        elif component == "analytics-service":
            env["DATABASE_URL"] = f"mysql://root@127.0.0.1:3306/{self.databases[component]}"
        return env

    def start_services(self, webhook_url, order_db_port):
        for component in COMPONENTS:
            self.ports[component] = free_port()
        for component in COMPONENTS:
            log = open(self.work / f"{component}.log", "wb")
            process = subprocess.Popen([str(self.binaries / component)], env=self.environment(
                component, webhook_url, order_db_port), stdout=log, stderr=subprocess.STDOUT)
            self.processes.append(process)
        for component in COMPONENTS:
            self.wait(f"{component} ready", lambda c=component: fetch("GET", self.url(c, "/readyz"))[0] == 200, 60)

    def url(self, component, path):
        return f"http://127.0.0.1:{self.ports[component]}{path}"

    def wait(self, what, condition, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}")

    def prometheus_config(self):
        chart = self.chart
        jobs = []
        for component in COMPONENTS:
            service = chart.services[component]
            # What the Prometheus Operator gives a ServiceMonitor's target (job = the Service's name).
            labels = {"namespace": chart.namespace, "service": service, "pod": f"{service}-7d9f8b6c5-x2x4z",
                      "container": component, "endpoint": "http"}
            jobs.append({"job_name": service, "metrics_path": "/metrics",
                         "static_configs": [{"targets": [f"127.0.0.1:{self.ports[component]}"], "labels": labels}]})
        broker = chart.services["broker"]
        labels = {"namespace": chart.namespace, "service": broker, "pod": f"{broker}-0", "container": "rabbitmq",
                  "endpoint": "prometheus"}
        jobs.append({"job_name": broker, "metrics_path": "/metrics",
                     "static_configs": [{"targets": [RABBITMQ_METRICS], "labels": labels}]})
        jobs.append({"job_name": f"{broker}-detailed", "metrics_path": "/metrics/detailed",
                     "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
                     "static_configs": [{"targets": [RABBITMQ_METRICS],
                                         "labels": {**labels, "job": broker, "metrics_path": "/metrics/detailed"}}],
                     "honor_labels": False})
        return {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "scrape_configs": jobs}

    def start_prometheus(self):
        config = self.work / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.prometheus_config(), sort_keys=False))
        self.prometheus_port = free_port()
        log = open(self.work / "prometheus.log", "wb")
        self.processes.append(subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={self.work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.prometheus_port}"], stdout=log, stderr=subprocess.STDOUT))
        self.wait("prometheus", lambda: fetch("GET", f"http://127.0.0.1:{self.prometheus_port}/-/ready")[0] == 200, 60)
        # Every target scraped before the load: counters seen at zero first, so increase() sees them grow.
        targets = len(self.prometheus_config()["scrape_configs"])
        self.wait("a first scrape of every target", lambda: len(self.promql("up == 1")[0] or []) == targets, 60)

    def promql(self, expr):
        query = urllib.parse.urlencode({"query": expr})
        status, body = fetch("GET", f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?{query}")
        answer = json.loads(body or b"{}")
        if status != 200 or answer.get("status") != "success":
            return None, answer.get("error", f"HTTP {status}")
        return answer["data"]["result"], None

    def load(self, proxy):
        created = []
        for i in range(ORDERS):
            order = {"customer_id": f"c{i % 7}", "product_id": f"p{i % 5}", "quantity": 1 + i % 3,
                     "total_amount": f"{10 + i}.25"}
            status, body = fetch("POST", self.url("order-service", "/orders"), order)
            if status == 201:
                created.append(json.loads(body)["id"])
        for order_id in created[:50]:
            fetch("GET", self.url("order-service", f"/orders/{order_id}"))
            fetch("GET", self.url("order-service", f"/orders/{order_id}"))
        for order_id in created[-CANCELLED:]:
            fetch("POST", self.url("order-service", f"/orders/{order_id}/cancel"), {"reason": "live check"})
        for _ in range(20):
            fetch("GET", self.url("analytics-service", "/analytics/summary"))
        fetch("GET", self.url("order-service", "/orders?limit=10"))
        # A short database outage: the API answers 503 while it lasts.
        proxy.cut()
        outage = [fetch("POST", self.url("order-service", "/orders"), {"customer_id": "c", "product_id": "p",
                                                                      "quantity": 1, "total_amount": "1.00"})[0]
                  for _ in range(5)]
        proxy.restore()
        return created, outage

    def run(self):
        chart = self.chart
        missing = [c for c in (*COMPONENTS, "broker") if c not in chart.services]
        if missing:
            print(f"the render has no ServiceMonitor for {', '.join(missing)}")
            return 1
        for database in self.databases.values():
            mariadb(f"CREATE DATABASE `{database}`")
        proxy = Proxy(3306)
        webhook = Webhook()
        self.start_services(f"http://127.0.0.1:{webhook.server_address[1]}/hook", proxy.port)
        self.start_prometheus()
        created, outage = self.load(proxy)
        if len(created) != ORDERS or not any(status >= 500 for status in outage):
            print(f"load: {len(created)} of {ORDERS} orders accepted; during the outage: {outage}")
            return 1
        self.wait("the service to answer again",
                  lambda: fetch("GET", self.url("order-service", "/readyz"))[0] == 200, 60)
        def summary():
            return json.loads(fetch("GET", self.url("analytics-service", "/analytics/summary"))[1] or b"{}")
        self.wait("every order counted, net of the cancellations",
                  lambda: (summary().get("total_orders"), summary().get("cancelled_orders"))
                  == (ORDERS - CANCELLED, CANCELLED), 60)
        # A few more scrapes after the last event, and rates over a window that holds the load.
        time.sleep(5)

        failures = []
        with_data = 0
        for where, expr in chart.queries:
            result, error = self.promql(chart.query(expr))
            if error:
                failures.append(f"dashboard {where}: {error}\n    {expr}")
            elif not result:
                failures.append(f"dashboard {where}: no data\n    {chart.query(expr)}")
            else:
                with_data += 1
        true_now = []
        for alert, expr in chart.alerts:
            result, error = self.promql(expr)
            if error:
                failures.append(f"alert {alert}: {error}\n    {expr}")
            elif result:
                true_now.append(f"{alert} {[series['metric'] for series in result]}")
        for failure in failures:
            print(f"  {failure}")
        print(f"dashboard queries with data: {with_data} of {len(chart.queries)}; alert expressions evaluated: "
              f"{len(chart.alerts)} (true now, before any `for`: {', '.join(true_now) or 'none'}); {ORDERS} orders ({CANCELLED} cancelled), {webhook.calls} webhook calls, "
              f"outage answers {outage}")
        return 1 if failures else 0

    def cleanup(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        for database in self.databases.values():
            mariadb(f"DROP DATABASE IF EXISTS `{database}`")
        listed = subprocess.run([str(ROOT / "scripts/rabbitmq4.sh"), "ctl", "-q", "list_queues", "name"],
                                capture_output=True, text=True).stdout.split()
        connection = pika.BlockingConnection(pika.URLParameters(AMQP))
        channel = connection.channel()
        for queue in (q for q in listed if q.startswith(f"{self.name}.")):
            channel.queue_delete(queue)
        for suffix in ("orders", "orders.retry", "orders.dlx"):
            channel.exchange_delete(f"{self.name}.{suffix}")
        connection.close()
        keys = subprocess.run(["redis-cli", "-h", "127.0.0.1", "--scan", "--pattern", f"{self.name}:*"],
                              capture_output=True, text=True).stdout.split()
        if keys:
            subprocess.run(["redis-cli", "-h", "127.0.0.1", "del", *keys], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.work)])


def main(rendered, binaries, name):
    check = Check(rendered, binaries, name)
    try:
        return check.run()
    except Exception as error:  # noqa: BLE001 - report, clean up, fail
        print(f"live metrics check failed: {error}")
        for log in sorted(check.work.glob("*.log")):
            print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return 1
    finally:
        check.cleanup()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
