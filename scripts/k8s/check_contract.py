#!/usr/bin/env python3
"""Contract between the build and the deployment: skaffold artifacts, Dockerfile targets and
the chart's image values name the same images, and ports agree everywhere.

Usage: check_contract.py RENDERED_DEV.yaml   (values-dev.yaml rendered in skaffold's namespace)

- every skaffold artifact builds the Dockerfile target of its own name;
- each chart service's image.repository is an artifact, and skaffold sets exactly that
  service's image.repository/tag from the artifact's IMAGE_REPO_/IMAGE_TAG_ template;
- each service target runs /usr/local/bin/<target>, built by `cargo build -p <target>`, and
  declares the chart's port (ENV SERVICE_PORT, EXPOSE);
- skaffold's port-forwards name Services and ports that the chart renders;
- skaffold deploys only to the kind cluster, and `make kind-load` builds and loads exactly the
  chart's images with the tag the chart uses by default (its appVersion).
"""
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_SERVICES = ("orderService", "analyticsService", "notificationWorker")

errors = []


def fail(msg):
    errors.append(msg)


def dockerfile_stages(text):
    """Stage name -> list of instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", text)
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(1) or f"stage{len(stages)}"
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages


def check_kind_load(values):
    """`make kind-load` (read with make -n): each chart image built from its target and loaded
    into kind under <repository>:<appVersion>, the reference the chart renders by default."""
    chart = yaml.safe_load((ROOT / "charts/orderflow/Chart.yaml").read_text())
    commands = subprocess.run(["make", "-s", "-n", "kind-load"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
    images = re.search(r"for image in ([^;]+); do", commands)
    built = set(images.group(1).split()) if images else set()
    expected = {values[key]["image"]["repository"] for key in CHART_SERVICES}
    if built != expected:
        fail(f"make kind-load builds {sorted(built)}, the chart deploys {sorted(expected)}")
    tag = chart["appVersion"]
    for key in CHART_SERVICES:
        if values[key]["image"].get("tag") or values["image"].get("tag"):
            fail(f"{key}: the default image tag must be empty (the chart's appVersion)")
    for command in (f"docker build --target $image -t $image:{tag} .",
                    f"kind load docker-image $image:{tag} --name orderflow"):
        if command not in commands:
            fail(f"make kind-load must run `{command}`")


def main():
    rendered_dev = sys.argv[1]
    stages = dockerfile_stages((ROOT / "Dockerfile").read_text())
    build_cmd = " ".join(i for i in stages.get("builder", []) if "cargo build" in i)
    skaffold = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts/orderflow/values.yaml").read_text())

    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    for image, a in artifacts.items():
        target = a.get("docker", {}).get("target")
        if target != image:
            fail(f"skaffold artifact {image} builds target {target!r}, expected {image!r}")
        if target not in stages:
            fail(f"skaffold artifact {image}: Dockerfile has no target {target!r}")
        if a.get("context", ".") != "." or a["docker"].get("dockerfile", "Dockerfile") != "Dockerfile":
            fail(f"skaffold artifact {image} must build ./Dockerfile from the repository root")

    (release,) = skaffold["deploy"]["helm"]["releases"]
    templates = release.get("setValueTemplates", {})
    used = set()
    for key in CHART_SERVICES:
        svc = values[key]
        repo, port = svc["image"]["repository"], svc["port"]
        var = repo.replace("-", "_")
        if repo not in artifacts:
            fail(f"{key}.image.repository={repo} is not a skaffold artifact")
            continue
        used.add(repo)
        for field, tmpl in (("repository", f"{{{{.IMAGE_REPO_{var}}}}}"), ("tag", f"{{{{.IMAGE_TAG_{var}}}}}")):
            got = templates.get(f"{key}.image.{field}")
            if got != tmpl:
                fail(f"skaffold setValueTemplates {key}.image.{field} = {got!r}, expected {tmpl!r}")
        stage = stages.get(repo, [])
        if f'ENTRYPOINT ["/usr/local/bin/{repo}"]' not in stage:
            fail(f"Dockerfile target {repo} must run /usr/local/bin/{repo}")
        if f"ENV SERVICE_PORT={port}" not in stage or f"EXPOSE {port}" not in stage:
            fail(f"Dockerfile target {repo} must declare SERVICE_PORT={port} and EXPOSE {port} like the chart")
        if f"-p {repo}" not in build_cmd:
            fail(f"Dockerfile builder does not build package {repo}")
        if not (ROOT / "crates" / repo / "Cargo.toml").exists():
            print(f"note: crates/{repo} does not exist yet (the image cannot be built until it does)")
    for image in sorted(set(artifacts) - used):
        fail(f"skaffold artifact {image} is not used by any chart service")
    for path in [release["chartPath"], *release.get("valuesFiles", [])]:
        if not (ROOT / path).exists():
            fail(f"skaffold release refers to missing {path}")

    if skaffold["deploy"].get("kubeContext") != "kind-orderflow":
        fail("skaffold must pin deploy.kubeContext to kind-orderflow (values-dev.yaml holds public passwords)")
    check_kind_load(values)

    docs = [d for d in yaml.safe_load_all(open(rendered_dev)) if d]
    services = {(d["metadata"]["name"]): [p["port"] for p in d["spec"]["ports"]] for d in docs if d["kind"] == "Service"}
    for pf in skaffold.get("portForward", []):
        if pf.get("namespace") != release["namespace"]:
            continue  # add-ons (Grafana) are not part of the chart
        name, port = pf["resourceName"], pf["port"]
        if port not in services.get(name, []):
            fail(f"skaffold portForward {name}:{port} matches no Service port rendered by the chart")

    for e in errors:
        print("FAIL", e)
    print(f"contract: {len(artifacts)} artifacts, {len(CHART_SERVICES)} chart images, "
          f"{len(skaffold.get('portForward', []))} port-forwards; {len(errors)} problems")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
