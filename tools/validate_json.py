#!/usr/bin/env python3
"""Validate JSON documents against h2t-store's schemas (draft 2020-12, cross-file $refs resolved).

Usage:
  python3 tools/validate_json.py SCHEMA FILE...     # SCHEMA: a file name in schemas/ without .schema.json; FILE '-' is stdin
  python3 tools/validate_json.py --registry STORE   # every value of the registry, aliases and tags tables
  python3 tools/validate_json.py --head-file FILE   # the metadata JSON of a head file (safetensors)

Prints "N documents valid" and exits 0, or prints each violation and exits 1.
"""

import json
import os
import struct
import sys

import jsonschema
from referencing import Registry, Resource

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "schemas")


def load_registry():
    resources, by_name = [], {}
    for name in sorted(os.listdir(ROOT)):
        if not name.endswith(".schema.json"):
            continue
        with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
            schema = json.load(handle)
        jsonschema.Draft202012Validator.check_schema(schema)
        resources.append((schema["$id"], Resource.from_contents(schema)))
        by_name[name[: -len(".schema.json")]] = schema
    return Registry().with_resources(resources), by_name


def validate(documents, schema, registry):
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    failures = 0
    for label, document in documents:
        for error in validator.iter_errors(document):
            failures += 1
            path = "/".join(str(p) for p in error.absolute_path)
            print(f"{label}: {path or '(root)'}: {error.message[:300]}", file=sys.stderr)
    return failures


def registry_documents(store):
    import lmdb
    env = lmdb.open(store, readonly=True, lock=True, create=False, subdir=True, max_dbs=16)
    out = []
    for table in ("registry", "aliases", "tags"):
        db = env.open_db(table.encode(), create=False)
        with env.begin(db=db) as txn:
            for key, value in txn.cursor():
                if table == "tags" and key[:1] == b"k":
                    if value != b"":
                        out.append((f"tags/{key!r}", {"index value must be empty": True}))
                    continue
                out.append((f"{table}/{key!r}", json.loads(value)))
    return out


def head_file_document(path):
    with open(path, "rb") as handle:
        data = handle.read()
    (length,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + length])
    return json.loads(header["__metadata__"]["h2t.head"])


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    registry, schemas = load_registry()
    if argv[0] == "--registry":
        documents, schema = registry_documents(argv[1]), schemas["registry"]
    elif argv[0] == "--head-file":
        documents, schema = [(p, head_file_document(p)) for p in argv[1:]], schemas["head-file"]
    else:
        if argv[0] not in schemas:
            print(f"validate_json.py: no schema '{argv[0]}' in {ROOT}", file=sys.stderr)
            return 2
        schema = schemas[argv[0]]
        documents = []
        for path in argv[1:]:
            if path == "-":
                documents.append(("<stdin>", json.load(sys.stdin)))
                continue
            with open(path, encoding="utf-8") as handle:
                documents.append((path, json.load(handle)))
    failures = validate(documents, schema, registry)
    if failures:
        print(f"{failures} violations in {len(documents)} documents", file=sys.stderr)
        return 1
    print(f"{len(documents)} documents valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
