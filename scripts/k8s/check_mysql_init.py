"""The MySQL init script the chart renders, run against the local MariaDB with hostile passwords.

Usage: check_mysql_init.py HELM CHART

Renders the chart with database and user names of this run's own and passwords full of quotes,
backslashes and shell syntax; runs the rendered `10-databases.sh` the way the MySQL image's
entrypoint does (sourced by bash, with `docker_process_sql` running SQL as root and the
rendered Secret's keys as files under CREDENTIALS_DIR, as the StatefulSet mounts it); then logs in as
each service user with its password: it reaches its own database and not the other's. Everything
it created is dropped at the end, also when a check fails. Needs MariaDB on 127.0.0.1:3306 (root,
empty password: `make servers`).
"""

import os
import subprocess
import sys
import tempfile
import uuid

import yaml

HOSTILE = [
    "it's a \"quoted\" \\ backslash; DROP DATABASE mysql; --",
    "$(touch /tmp/pwned) `id` ${HOME} 'x'\\'",
]
ROOT_ARGS = ["mariadb", "-h127.0.0.1", "-P3306", "-uroot", "--batch", "--skip-column-names"]


def mariadb(*args, user=None, password=None, sql):
    command = ROOT_ARGS if user is None else ["mariadb", "-h127.0.0.1", "-P3306", f"-u{user}", "--batch", "--skip-column-names"]
    env = dict(os.environ)
    if password is not None:
        env["MYSQL_PWD"] = password
    return subprocess.run([*command, *args], input=sql, text=True, capture_output=True, env=env)


def main(helm, chart):
    run = uuid.uuid4().hex[:8]
    databases = [
        {"name": f"oftest_init_{run}_a", "user": f"oft_{run}_a", "passwordKey": "order-db-password", "password": HOSTILE[0]},
        {"name": f"oftest_init_{run}_b", "user": f"oft_{run}_b", "passwordKey": "analytics-db-password", "password": HOSTILE[1]},
    ]
    # What MySQL creates is derived from the services' own database values.
    values = {
        "mysql": {"auth": {"rootPassword": "unused-root-password"}},
        "orderService": {"database": databases[0]},
        "analyticsService": {"database": databases[1]},
    }
    problems = []
    with tempfile.TemporaryDirectory() as directory:
        values_path = os.path.join(directory, "values.yaml")
        with open(values_path, "w") as file:
            yaml.safe_dump(values, file)
        rendered = subprocess.run([helm, "template", "orderflow", chart, "-f", values_path],
                                  capture_output=True, text=True, check=True).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        config = next(d for d in docs if d["kind"] == "ConfigMap" and "10-databases.sh" in d.get("data", {}))
        secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-mysql"))
        # The Secret as the StatefulSet mounts it: one file per key under CREDENTIALS_DIR.
        env = dict(os.environ)
        env["CREDENTIALS_DIR"] = os.path.join(directory, "credentials")
        os.mkdir(env["CREDENTIALS_DIR"])
        for key, value in secret["stringData"].items():
            with open(os.path.join(env["CREDENTIALS_DIR"], key), "w") as file:
                file.write(value)
        script = os.path.join(directory, "10-databases.sh")
        with open(script, "w") as file:
            file.write(config["data"]["10-databases.sh"])
        # What the image's entrypoint provides: SQL as root, here over TCP to the local server.
        driver = (
            'docker_process_sql() { mariadb -h127.0.0.1 -P3306 -uroot "$@"; }\n'
            f'source "{script}"\n'
        )
        try:
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", driver], env=env, capture_output=True, text=True)
            if result.returncode != 0:
                problems.append(f"the init script failed: {result.stderr.strip()}")
            for own, other in ((databases[0], databases[1]), (databases[1], databases[0])):
                reached = mariadb(own["name"], user=own["user"], password=own["password"], sql="SELECT DATABASE();")
                if reached.returncode != 0 or reached.stdout.strip() != own["name"]:
                    problems.append(f"{own['user']} cannot log in to {own['name']}: {reached.stderr.strip()}")
                crossed = mariadb(other["name"], user=own["user"], password=own["password"], sql="SELECT 1;")
                if crossed.returncode == 0:
                    problems.append(f"{own['user']} reaches {other['name']}, which is not its database")
                wrong = mariadb(own["name"], user=own["user"], password="not-the-password", sql="SELECT 1;")
                if wrong.returncode == 0:
                    problems.append(f"{own['user']} logs in with a wrong password")
            if os.path.exists("/tmp/pwned"):
                problems.append("a password was executed by the shell")
        finally:
            cleanup = "".join(
                f"DROP DATABASE IF EXISTS {db['name']}; DROP USER IF EXISTS '{db['user']}'@'%';" for db in databases
            )
            mariadb(sql=cleanup)
    for problem in problems:
        print("FAIL", problem)
    print(f"MySQL init script: {len(databases)} users with hostile passwords, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
