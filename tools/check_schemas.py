#!/usr/bin/env python3
"""Validate every JSON record of an h2t-store against ``schemas/*.schema.json`` (draft 2020-12).

Usage: ``python3 tools/check_schemas.py STORE``. Also checks the schemas themselves, and (through
``read_store.read_manifests``) that each manifest's id is the SHA-256 of its stored bytes.
Prints ``N records valid`` and exits 0, or prints each violation and exits 1.
Needs ``jsonschema`` besides the reader's modules (``tools/requirements.txt``).
"""

import json
import os
import sys

import jsonschema

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import read_store  # noqa: E402

SCHEMAS = {"backbones": "backbone", "featuresets": "featureset", "datasets": "dataset", "examples": "example"}


def main(argv):
    if len(argv) != 1:
        print("usage: check_schemas.py STORE", file=sys.stderr)
        return 2
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "schemas")
    validators = {}
    for table, name in SCHEMAS.items():
        with open(os.path.join(root, f"{name}.schema.json"), encoding="utf-8") as handle:
            schema = json.load(handle)
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[table] = jsonschema.Draft202012Validator(schema)
    try:
        records = read_store.read_manifests(argv[0])
    except read_store.StoreFormatError as error:
        print(f"check_schemas.py: {error}", file=sys.stderr)
        return 1
    count, failures = 0, 0
    for table, entries in records.items():
        for key, record in entries.items():
            count += 1
            for error in validators[table].iter_errors(record):
                failures += 1
                path = "/".join(str(p) for p in error.absolute_path)
                print(f"{table}/{key[:16]}: {path or '(root)'}: {error.message}", file=sys.stderr)
    if failures:
        print(f"{failures} violations in {count} records", file=sys.stderr)
        return 1
    print(f"{count} records valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
