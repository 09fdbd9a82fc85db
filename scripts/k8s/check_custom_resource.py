"""Validates custom resources in YAML files against a CRD's openAPIV3Schema, strictly.

Usage: check_custom_resource.py SCHEMA.json FILE.yaml...

Two checks per document (the files hold resources of that CRD only): the JSON-schema validation (types, enums, required
fields, bounds), and that every field is one the schema declares. The API server would silently
prune an unknown field (a typo such as `replica:`) rather than refuse it, so this is what catches
it here.
"""

import json
import sys

import jsonschema
import yaml


def unknown_fields(value, schema, path, found):
    """Fields of `value` that `schema` does not declare, where it declares its fields."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                unknown_fields(item, properties[key], f"{path}.{key}", found)
            elif isinstance(additional, dict):
                unknown_fields(item, additional, f"{path}.{key}", found)
            elif properties is not None and additional is None:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            unknown_fields(item, schema["items"], f"{path}[{index}]", found)


def main(schema_path, *files):
    with open(schema_path) as file:
        schema = json.load(file)
    problems, checked = [], 0
    for path in files:
        with open(path) as file:
            for document in yaml.safe_load_all(file):
                if not document:
                    continue
                checked += 1
                where = f"{path}: {document.get('kind')}/{document.get('metadata', {}).get('name')}"
                for error in jsonschema.Draft7Validator(schema).iter_errors(document):
                    problems.append(f"{where}: {'/'.join(map(str, error.absolute_path))}: {error.message}")
                found = []
                unknown_fields(document, schema, "", found)
                problems.extend(f"{where}: unknown field {field}" for field in found)
    for problem in problems:
        print("FAIL", problem)
    print(f"custom resources: {checked} checked against {schema_path.split('/')[-1]}, {len(problems)} problems")
    return 1 if problems or not checked else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
