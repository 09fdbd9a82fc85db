"""Lint of the Grafana dashboards in charts/orderflow/dashboards/.

Usage: check_dashboards.py DASHBOARD.json...

For each dashboard: a uid; panel ids unique (rows and nested panels included); every panel has a
grid position inside the 24-column grid, and no two panels overlap; every `$variable` (or
`${variable}`) a query, title or datasource uses is defined in the templating list or is one of
Grafana's own; every panel and target, and every query variable, takes its data source from the
`datasource` variable, never a fixed one.
"""

import json
import re
import sys

BUILT_IN = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms",
            "__dashboard", "__from", "__to", "__name", "__org", "__user", "timeFilter", "interval"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables_used(value):
    text = json.dumps(value)
    return {a or b for a, b in VARIABLE.findall(text)}


def check(path):
    problems = []
    dashboard = json.load(open(path))
    if not dashboard.get("uid"):
        problems.append("no uid")
    defined = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    if "datasource" not in defined:
        problems.append("no datasource variable")
    ids, cells = {}, {}
    for panel in panels_of(dashboard):
        name = f"panel {panel.get('id')} '{panel.get('title', '')}'"
        if "id" not in panel:
            problems.append(f"{name}: no id")
        elif panel["id"] in ids:
            problems.append(f"{name}: id also used by '{ids[panel['id']]}'")
        else:
            ids[panel["id"]] = panel.get("title", "")
        grid = panel.get("gridPos")
        if not grid or not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            problems.append(f"{name}: no complete gridPos")
            continue
        if grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
            problems.append(f"{name}: outside the 24-column grid ({grid})")
        if panel.get("type") != "row" or not panel.get("collapsed"):
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    if (x, y) in cells:
                        problems.append(f"{name}: overlaps '{cells[(x, y)]}' at column {x}, row {y}")
                        break
                    cells[(x, y)] = panel.get("title", "")
                else:
                    continue
                break
        if panel.get("type") != "row":
            sources = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
            for source in sources:
                uid = source.get("uid") if isinstance(source, dict) else source
                if uid != "${datasource}":
                    problems.append(f"{name}: data source {source!r}, not the datasource variable")
            if not panel.get("targets"):
                problems.append(f"{name}: no query")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and variable.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"variable {variable['name']}: data source is not the datasource variable")
    for used in sorted(variables_used(dashboard.get("panels", [])) | variables_used(dashboard.get("templating", {}))):
        if used not in defined and used not in BUILT_IN:
            problems.append(f"${used} is used but not defined")
    return problems, len(ids)


def main(paths):
    failed = False
    for path in paths:
        problems, panels = check(path)
        for problem in problems:
            print(f"FAIL {path}: {problem}")
        failed |= bool(problems)
        print(f"{path}: {panels} panels, {len(problems)} problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
