"""A bare `helm install` (no values): every in-chart datastore gets a generated password.

Usage: check_generated_passwords.py FIRST.yaml SECOND.yaml — two renders of the chart with no
values. Offline there is no cluster to read an existing Secret back from, so each render must
generate new passwords; what `helm upgrade` keeps (the `lookup` of the live Secret) can only be
exercised on a cluster.
"""

import re
import sys

import yaml

# Secret name -> the keys it must hold, and whether it outlives the release (its data volume does).
EXPECTED = {
    "orderflow-mysql": (["mysql-root-password", "order-db-password", "analytics-db-password"], True),
    "orderflow-rabbitmq": (["rabbitmq-password"], True),
    "orderflow-redis": (["redis-password"], False),
    "orderflow-dedupe-redis": (["redis-password"], False),
}
GENERATED = re.compile(r"^[A-Za-z0-9]{32}$")


def secrets(path):
    with open(path) as file:
        return {
            doc["metadata"]["name"]: doc
            for doc in yaml.safe_load_all(file)
            if doc and doc.get("kind") == "Secret"
        }


def main(first_path, second_path):
    first, second = secrets(first_path), secrets(second_path)
    problems = []
    for name, (keys, kept) in EXPECTED.items():
        if name not in first:
            problems.append(f"{name}: not rendered")
            continue
        data = first[name].get("stringData", {})
        for key in keys:
            value = data.get(key, "")
            if not GENERATED.match(value):
                problems.append(f"{name}/{key}: not a generated 32-character password")
            elif value == second[name].get("stringData", {}).get(key):
                problems.append(f"{name}/{key}: the same in two renders, so not generated")
        policy = (first[name]["metadata"].get("annotations") or {}).get("helm.sh/resource-policy")
        if kept and policy != "keep":
            problems.append(f"{name}: must be kept on uninstall (helm.sh/resource-policy: keep)")
        if not kept and policy:
            problems.append(f"{name}: has resource-policy {policy}, expected none")
    if problems:
        print("\n".join(problems))
        return 1
    print(f"{sum(len(keys) for keys, _ in EXPECTED.values())} passwords generated in {len(EXPECTED)} Secrets")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
