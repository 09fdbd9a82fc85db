"""The chart's alert rules with promtool: `promtool check rules` on the rendered PrometheusRule,
then `promtool test rules` on charts/orderflow/ci/alert-tests.yaml (a case where each alert fires,
with its labels and annotations, and cases where it stays quiet); every alert must have a test.

Usage: check_alerts.py RENDERED_FULL.yaml   (Debian's prometheus package brings promtool)
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "charts/orderflow/ci/alert-tests.yaml"


def main(rendered):
    rules = [d for d in yaml.safe_load_all(open(rendered)) if d and d["kind"] == "PrometheusRule"]
    if len(rules) != 1:
        print(f"expected one PrometheusRule in {rendered}, found {len(rules)}")
        return 1
    groups = rules[0]["spec"]["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    tested = {case["alertname"] for test in yaml.safe_load(TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    untested = sorted(alerts - tested)
    if untested:
        print(f"alerts without a test in {TESTS.relative_to(ROOT)}: {', '.join(untested)}")
        return 1
    with tempfile.TemporaryDirectory() as directory:
        rules_file = Path(directory) / "rules.yaml"
        rules_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        shutil.copy(TESTS, Path(directory) / TESTS.name)
        for command in (["promtool", "check", "rules", "rules.yaml"],
                        ["promtool", "test", "rules", TESTS.name]):
            result = subprocess.run(command, cwd=directory, capture_output=True, text=True)
            if result.returncode != 0:
                print(result.stdout + result.stderr)
                return 1
    print(f"promtool: {len(alerts)} alerts checked and tested (firing and quiet cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
