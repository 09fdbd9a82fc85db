#!/usr/bin/env python3
"""Policy checks on rendered chart output: what the schemas cannot see.

Usage: check_rendered.py CASE=FILE...   (CASE names an entry of EXPECTED below)

Checks every pod (security context, no service links, no token, resources, secrets only by
reference), the orderflow Deployments against the service contract (ports, probe paths,
grace periods, replicas vs autoscalers), which Redis each service uses and how the dedupe Redis
keeps its keys, and the objects each case must (not) render.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

import yaml

COMPONENTS = {  # component -> (port, database or None)
    "order-service": (8080, "order_db"),
    "analytics-service": (8081, "analytics_db"),
    "notification-worker": (8082, None),
}
NONROOT_UID = 65532

# Objects each case renders (kind -> count). Kinds not listed must be absent.
EXPECTED = {
    "default": {"Deployment": 4, "StatefulSet": 3, "Service": 7, "Secret": 4, "ConfigMap": 3,
                "ServiceAccount": 1, "PodDisruptionBudget": 3, "NetworkPolicy": 8, "Pod": 1},
    "full": {"Deployment": 4, "StatefulSet": 3, "Service": 7, "Secret": 1, "ConfigMap": 4,
             "ServiceAccount": 1, "PodDisruptionBudget": 3, "NetworkPolicy": 8, "Pod": 1,
             "HorizontalPodAutoscaler": 1, "ScaledObject": 2, "TriggerAuthentication": 1,
             "ServiceMonitor": 4, "PrometheusRule": 1},
    "external": {"Deployment": 3, "Service": 3, "Secret": 1, "ServiceAccount": 1,
                 "PodDisruptionBudget": 3, "NetworkPolicy": 4, "Pod": 1, "HorizontalPodAutoscaler": 3},
    "production": {"Deployment": 3, "Service": 3, "Secret": 1, "ConfigMap": 1, "ServiceAccount": 1,
                   "PodDisruptionBudget": 3, "NetworkPolicy": 4, "Pod": 1, "HorizontalPodAutoscaler": 1,
                   "ScaledObject": 2, "TriggerAuthentication": 1, "ServiceMonitor": 3, "PrometheusRule": 1},
    "dev": {"Deployment": 4, "StatefulSet": 3, "Service": 7, "Secret": 5, "ConfigMap": 4,
            "ServiceAccount": 1, "PodDisruptionBudget": 3, "NetworkPolicy": 8, "Pod": 1,
            "ScaledObject": 2, "TriggerAuthentication": 1, "ServiceMonitor": 4, "PrometheusRule": 1},
}

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def pod_spec(doc):
    if doc["kind"] == "Pod":
        return doc["spec"]
    return doc["spec"]["template"]["spec"]


def check_pod(where, spec):
    if spec.get("automountServiceAccountToken") is not False:
        fail(where, "automountServiceAccountToken must be false")
    if spec.get("enableServiceLinks") is not False:
        fail(where, "enableServiceLinks must be false")
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        fail(where, "pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(where, "pod seccompProfile must be RuntimeDefault")
    for c in spec.get("initContainers", []) + spec["containers"]:
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(cw, "allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(cw, "readOnlyRootFilesystem must be true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            fail(cw, "capabilities must drop ALL")
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        if not isinstance(uid, int) or uid == 0:
            fail(cw, f"needs a numeric non-root runAsUser, got {uid!r}")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(part, {}):
                    fail(cw, f"resources.{part}.{r} missing")
        if ":" not in c["image"].rsplit("/", 1)[-1]:
            fail(cw, f"image {c['image']} has no tag")
        for e in c.get("env", []):
            if re.search(r"PASSWORD|SECRET|_PASS$", e["name"]) and "secretKeyRef" not in e.get("valueFrom", {}):
                fail(cw, f"{e['name']} must come from a Secret (secretKeyRef)")


def check_service_deployment(where, doc, component, autoscaled):
    port, database = COMPONENTS[component]
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c.get("env", [])}
    value = lambda name: env.get(name, {}).get("value")
    if pod["securityContext"].get("runAsUser") != NONROOT_UID:
        fail(where, f"runAsUser must be {NONROOT_UID} (distroless nonroot)")
    if [p["containerPort"] for p in c["ports"]] != [port] or value("SERVICE_PORT") != str(port):
        fail(where, f"must listen on {port} (containerPort and SERVICE_PORT)")
    probes = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in probes.items():
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != "http":
            fail(where, f"{probe} must be httpGet {path} on port http")
    grace = int(value("SHUTDOWN_GRACE_PERIOD_SECONDS") or 0)
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if grace < 1 or pod.get("terminationGracePeriodSeconds", 30) <= grace + pre_stop:
        fail(where, "terminationGracePeriodSeconds must exceed preStop sleep + SHUTDOWN_GRACE_PERIOD_SECONDS")
    if autoscaled and "replicas" in spec:
        fail(where, "replicas must be absent while an autoscaler owns the Deployment")
    if not autoscaled and "replicas" not in spec:
        fail(where, "replicas missing without an autoscaler")
    if not pod.get("topologySpreadConstraints"):
        fail(where, "topologySpreadConstraints missing")
    for name in ("RABBITMQ_HOST", "RABBITMQ_USER", "RABBITMQ_PASSWORD", "REDIS_HOST"):
        if name not in env:
            fail(where, f"{name} missing")
    if database:
        if value("DB_NAME") != database or "DB_PASSWORD" not in env or not value("DB_HOST"):
            fail(where, f"must get DB_HOST, DB_NAME={database} and DB_PASSWORD")
    elif any(n.startswith("DB_") or n == "DATABASE_URL" for n in env):
        fail(where, "has no database but gets DB_* settings")


WORKER = "notification-worker"
# Pod labels the in-chart Redis NetworkPolicies admit: the worker only the dedupe one.
CACHE_CLIENT, DEDUPE_CLIENT = "orderflow/redis-client", "orderflow/dedupe-redis-client"


def args_map(args):
    """`--flag value` pairs of a redis-server command line."""
    return {args[i]: args[i + 1] for i in range(0, len(args) - 1, 2) if args[i].startswith("--")}


def mebibytes(quantity):
    m = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|k|M|G)?", str(quantity))
    factor = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[m.group(2)]
    return int(m.group(1)) * factor / 2**20


def check_redis(case, docs):
    """notification-worker uses a Redis of its own (the dedupe store), the other services the
    cache; only the worker may reach the in-chart dedupe Redis, which never evicts, keeps an
    append-only file on a claim and leaves memory headroom under its limit."""
    deployments = {d["metadata"]["labels"].get("app.kubernetes.io/component"): d
                   for d in docs if d["kind"] == "Deployment"}
    env = {c: {e["name"]: e for e in pod_spec(deployments[c])["containers"][0].get("env", [])}
           for c in COMPONENTS if c in deployments}
    hosts = {c: e["REDIS_HOST"].get("value") for c, e in env.items() if "REDIS_HOST" in e}
    cache_hosts = {h for c, h in hosts.items() if c != WORKER}
    if len(cache_hosts) != 1 or hosts.get(WORKER) in cache_hosts:
        fail(case, f"the worker must use its own Redis, the others one cache: REDIS_HOST {hosts}")
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet", "Pod"):
            continue
        labels = (d["metadata"] if d["kind"] == "Pod" else d["spec"]["template"]["metadata"]).get("labels", {})
        is_worker = labels.get("app.kubernetes.io/component") == WORKER and d["kind"] == "Deployment"
        if (DEDUPE_CLIENT in labels) != is_worker:
            fail(f"{case}: {d['kind']}/{d['metadata']['name']}", f"only the worker may carry {DEDUPE_CLIENT}")
        if is_worker and CACHE_CLIENT in labels:
            fail(f"{case}: {d['kind']}/{d['metadata']['name']}", f"the worker does not use the cache ({CACHE_CLIENT})")
    redis = {d["metadata"]["labels"]["app.kubernetes.io/name"]: d for d in docs
             if d["kind"] in ("Deployment", "StatefulSet")
             and d["metadata"]["labels"].get("app.kubernetes.io/name") in ("redis", "dedupe-redis")}
    if "redis" in redis:
        args = args_map(pod_spec(redis["redis"])["containers"][0]["args"])
        if redis["redis"]["kind"] != "Deployment" or args.get("--maxmemory-policy") != "allkeys-lru" \
                or args.get("--appendonly") != "no":
            fail(f"{case}: cache Redis", "must stay a Deployment with allkeys-lru and no append-only file")
    store = redis.get("dedupe-redis")
    if store is None:
        return
    where = f"{case}: {store['kind']}/{store['metadata']['name']}"
    (c,) = pod_spec(store)["containers"]
    args = args_map(c["args"])
    if store["kind"] != "StatefulSet":
        fail(where, "must be a StatefulSet (its data on a claim)")
    if args.get("--maxmemory-policy") != "noeviction":
        fail(where, "must run with --maxmemory-policy noeviction")
    if args.get("--appendonly") != "yes" or args.get("--appendfsync") not in ("everysec", "always"):
        fail(where, "must run with --appendonly yes and --appendfsync everysec (or always)")
    claims = [t["metadata"]["name"] for t in store["spec"].get("volumeClaimTemplates", [])]
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    if args.get("--dir") != "/data" or "data" not in claims or mounts.get("data") != "/data":
        fail(where, "its --dir /data must be the claim `data`")
    maxmemory = re.fullmatch(r"([0-9]+)mb", args.get("--maxmemory", ""))
    limit = c["resources"]["limits"]["memory"]
    if not maxmemory or int(maxmemory.group(1)) > 0.75 * mebibytes(limit):
        fail(where, f"--maxmemory {args.get('--maxmemory')} leaves too little of the {limit} limit")
    worker = env.get(WORKER, {})
    secret = c["env"][0]["valueFrom"]["secretKeyRef"]["name"]
    if hosts.get(WORKER) != store["metadata"]["name"] or \
            worker.get("REDIS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name") != secret:
        fail(case, f"the worker must use the dedupe Redis {store['metadata']['name']} and its Secret {secret}")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == store["metadata"]["name"]]
    peers = [p for pol in policies for rule in pol["spec"]["ingress"] for p in rule["from"]]
    if not policies or any(DEDUPE_CLIENT not in p.get("podSelector", {}).get("matchLabels", {}) for p in peers):
        fail(where, f"its NetworkPolicy must admit only pods labelled {DEDUPE_CLIENT}")


def check_mysql_init(where, script, databases):
    """Runs the MySQL init script with the image's docker_process_sql stubbed out, using password
    files (as the mounted Secret gives them) that need escaping, and checks the SQL it would run."""
    tricky = ["it's a \\ test", "plain-password"]
    with tempfile.TemporaryDirectory() as credentials:
        for i, db in enumerate(databases):
            with open(os.path.join(credentials, db["passwordKey"]), "w") as file:
                file.write(tricky[i % 2])
        env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIR": credentials}
        run = subprocess.run(
            ["bash", "-c", 'set -euo pipefail; docker_process_sql() { echo "-- args: $*"; cat; }; source "$1"', "_", "/dev/stdin"],
            input=script, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        fail(where, f"init script failed: {run.stderr.strip()}")
        return
    sql = run.stdout
    if "-- args: --database=mysql" not in sql:
        fail(where, "init script must run its SQL through docker_process_sql --database=mysql")
    for i, db in enumerate(databases):
        literal = "'" + tricky[i % 2].replace("\\", "\\\\").replace("'", "''") + "'"
        for stmt in (f"CREATE DATABASE IF NOT EXISTS {db['name']} ",
                     f"CREATE USER IF NOT EXISTS '{db['user']}'@'%' IDENTIFIED BY {literal};",
                     f"GRANT ALL PRIVILEGES ON {db['name']}.* TO '{db['user']}'@'%';"):
            if stmt not in sql:
                fail(where, f"init SQL lacks: {stmt}")


def check_mysql(where, statefulset, docs):
    """The in-chart MySQL runs the init script derived from the services' database values and
    reads their passwords from the Secret the services read them from."""
    name = statefulset["metadata"]["name"]
    spec = statefulset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    secret_name = env["MYSQL_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    credentials = volumes.get(mounts.get(env.get("CREDENTIALS_DIR", {}).get("value")), {})
    if credentials.get("secret", {}).get("secretName") != secret_name:
        fail(where, f"CREDENTIALS_DIR must be the Secret {secret_name} mounted")
    init = volumes.get(mounts.get("/docker-entrypoint-initdb.d"), {}).get("configMap", {}).get("name")
    if init != f"{name}-init":
        fail(where, f"/docker-entrypoint-initdb.d must be the ConfigMap {name}-init, not {init}")
        return
    (config,) = [c for c in docs if c["kind"] == "ConfigMap" and c["metadata"]["name"] == init]
    services = [d for d in docs if d["kind"] == "Deployment"
                and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in COMPONENTS]
    databases = []
    for deployment in services:
        service_env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        if "DB_PASSWORD" not in service_env:
            continue
        reference = service_env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]
        if reference["name"] != secret_name:
            fail(where, f"{deployment['metadata']['name']} reads its password from {reference['name']}, MySQL from {secret_name}")
        databases.append({"name": service_env["DB_NAME"]["value"], "user": service_env["DB_USER"]["value"],
                          "passwordKey": reference["key"]})
    if sorted(db["name"] for db in databases) != ["analytics_db", "order_db"]:
        fail(where, f"services log in to {databases}, expected order_db and analytics_db")
    check_mysql_init(where, config["data"]["10-databases.sh"], databases)


def check_case(case, path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = Counter(d["kind"] for d in docs)
    if dict(kinds) != EXPECTED[case]:
        fail(case, f"rendered kinds {dict(sorted(kinds.items()))} != expected {dict(sorted(EXPECTED[case].items()))}")
    hpa_targets = [d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    keda_targets = [d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject"]
    for t in set(hpa_targets) & set(keda_targets):
        fail(case, f"{t} has both an HPA and a ScaledObject")
    check_redis(case, docs)
    selected = [d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for d in docs:
        where = f"{case}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "StatefulSet", "Pod"):
            check_pod(where, pod_spec(d))
        labels = d["metadata"].get("labels", {})
        component = labels.get("app.kubernetes.io/component")
        if d["kind"] == "Deployment" and component in COMPONENTS:
            name = d["metadata"]["name"]
            check_service_deployment(where, d, component, name in hpa_targets + keda_targets)
            pod_labels = d["spec"]["template"]["metadata"]["labels"]
            if not any(all(pod_labels.get(k) == v for k, v in sel.items()) for sel in selected):
                fail(where, "no PodDisruptionBudget selects its pods")
            if name not in services:
                fail(where, "no Service of the same name")
        if d["kind"] in ("ServiceMonitor", "PrometheusRule") and "release" not in labels:
            fail(where, "missing the `release` label Prometheus selects by")
        if d["kind"] == "StatefulSet" and labels.get("app.kubernetes.io/name") == "mysql":
            check_mysql(where, d, docs)
        if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-keda-rabbitmq"):
            host = d["stringData"]["host"].split("://", 1)[1].split(":", 1)[0]
            if "." not in host:
                fail(where, f"KEDA runs in another namespace: broker host {host!r} must be namespace-qualified")
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboards"):
            if labels.get("grafana_dashboard") != "1":
                fail(where, 'dashboards need the label grafana_dashboard: "1"')
            for key, text in d["data"].items():
                json.loads(text)


def main():
    for arg in sys.argv[1:]:
        case, path = arg.split("=", 1)
        check_case(case, path)
    for e in errors:
        print("FAIL", e)
    print(f"rendered-output policy: {len(sys.argv) - 1} cases, {len(errors)} problems")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
