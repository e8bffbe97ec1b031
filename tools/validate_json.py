#!/usr/bin/env python3
"""Validate a JSON document (a file, or stdin with '-') against schemas/NAME.schema.json.

Usage: python3 tools/validate_json.py NAME [FILE|-]
Exit 0 when valid; otherwise prints the first violation (with its JSON path) and exits 1.
Used by the CLI tests to check every `--json` output against its documented schema.
"""

import json
import os
import sys

import jsonschema
from referencing import Registry, Resource


def main(argv):
    if len(argv) not in (1, 2):
        print("usage: validate_json.py NAME [FILE|-]", file=sys.stderr)
        return 2
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "schemas")
    with open(os.path.join(root, f"{argv[0]}.schema.json"), encoding="utf-8") as handle:
        schema = json.load(handle)
    jsonschema.Draft202012Validator.check_schema(schema)
    # Every schema in the folder, by its $id, so that cross-schema $refs resolve offline.
    resources = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".schema.json"):
            with open(os.path.join(root, name), encoding="utf-8") as handle:
                other = json.load(handle)
            if "$id" in other:
                resources.append((other["$id"], Resource.from_contents(other)))
    registry = Registry().with_resources(resources)
    source = sys.stdin if len(argv) == 1 or argv[1] == "-" else open(argv[1], encoding="utf-8")
    document = json.load(source)
    errors = sorted(jsonschema.Draft202012Validator(schema, registry=registry).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        path = "/".join(str(p) for p in first.path) or "(root)"
        print(f"{argv[0]}: {path}: {first.message}", file=sys.stderr)
        return 1
    print(f"{argv[0]}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
