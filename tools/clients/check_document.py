"""Checks openapi/openapi.json for the shapes client generators take whole (docs/clients.md).

Usage: check_document.py DOCUMENT [GENERATED_PYTHON_PACKAGE]

- no `oneOf` member is an `allOf` (each is an object, a string, `null`, another union, or
  a `$ref` to one of these);
- every union whose members all require the same single-value string property (a serde
  tag) has a `discriminator` on it whose mapping names each member by its value, and
  `Auth` and `Pagination` are such unions, tagged by `type`;
- no property is both required and defaulted;
- `Problem.status` is an HTTP status (100 to 599) with an example in that range, and each
  problem response's example has the response's own status;
- operation summaries are one line without Markdown (Swagger UI shows them raw);
- with GENERATED_PYTHON_PACKAGE: openapi-python-client wrote one API module per
  operationId of the document, no more, no fewer.
"""

import json
import pathlib
import sys

REF = "#/components/schemas/"


def main() -> int:
    doc = json.loads(pathlib.Path(sys.argv[1]).read_text())
    schemas = doc["components"]["schemas"]
    errors: list[str] = []

    def resolve(schema: dict) -> tuple[str, dict]:
        name = ""
        while "$ref" in schema:
            name = schema["$ref"].removeprefix(REF)
            schema = schemas[name]
        return name, schema

    def tags(schema: dict) -> dict[str, str]:
        """The required properties that are one string value each, with it."""
        return {
            prop: sub["enum"][0]
            for prop, sub in schema.get("properties", {}).items()
            if prop in schema.get("required", [])
            and sub.get("type") == "string"
            and len(sub.get("enum", [])) == 1
        }

    def walk(schema, at: str) -> None:
        if isinstance(schema, list):
            for i, item in enumerate(schema):
                walk(item, f"{at}/{i}")
            return
        if not isinstance(schema, dict):
            return
        for prop, sub in schema.get("properties", {}).items():
            if prop in schema.get("required", []) and isinstance(sub, dict) and "default" in sub:
                errors.append(f"{at}/properties/{prop}: required and defaulted")
        members = schema.get("oneOf")
        if members:
            resolved = [resolve(m) for m in members]
            for i, (name, member) in enumerate(resolved):
                if "allOf" in member:
                    errors.append(f"{at}/oneOf/{i} ({name or 'inline'}): an allOf, not a plain schema")
            objects = [m for _, m in resolved if m.get("type") == "object"]
            common = set.intersection(*(set(tags(m)) for m in objects)) if objects else set()
            tagged = len(objects) == len(members) > 1 and common
            if tagged:
                disc = schema.get("discriminator")
                if not disc or disc.get("propertyName") not in common:
                    errors.append(f"{at}: a tagged union ({sorted(common)}) without a discriminator")
                else:
                    prop = disc["propertyName"]
                    want = {tags(m)[prop]: REF + name for (name, m) in resolved}
                    if disc.get("mapping") != want:
                        errors.append(f"{at}: discriminator mapping {disc.get('mapping')} != {want}")
        for key, value in schema.items():
            if key in ("properties",):
                for prop, sub in value.items():
                    walk(sub, f"{at}/properties/{prop}")
            elif key in ("oneOf", "anyOf", "allOf", "items", "additionalProperties", "schema"):
                walk(value, f"{at}/{key}")

    for name, schema in schemas.items():
        walk(schema, f"{REF}{name}")
    for path, item in doc["paths"].items():
        walk(item, f"#/paths/{path}")

    for union in ("Auth", "Pagination"):
        disc = schemas[union].get("discriminator") or {}
        if disc.get("propertyName") != "type":
            errors.append(f"{union}: no discriminator on `type`")

    status = schemas["Problem"]["properties"]["status"]
    if status.get("minimum") != 100 or status.get("maximum") != 599:
        errors.append(f"Problem.status: range {status.get('minimum')}..{status.get('maximum')}")
    if not 100 <= status.get("example", 0) <= 599:
        errors.append(f"Problem.status: example {status.get('example')}")

    operation_ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            operation_ids.append(op["operationId"])
            summary = op.get("summary", "")
            if "`" in summary or "\n" in summary:
                errors.append(f"{method} {path}: summary {summary!r}")
            for code, response in op["responses"].items():
                problem = response.get("content", {}).get("application/problem+json")
                if problem and problem.get("example", {}).get("status") != int(code):
                    errors.append(f"{method} {path} {code}: problem example {problem.get('example')}")

    if len(sys.argv) > 2:
        modules = {
            p.stem for p in pathlib.Path(sys.argv[2], "api").glob("*/*.py") if p.stem != "__init__"
        }
        missing = sorted(set(operation_ids) - modules)
        extra = sorted(modules - set(operation_ids))
        if missing or extra:
            errors.append(f"generated API modules: missing {missing}, unexpected {extra}")
        else:
            print(f"generated Python client: all {len(operation_ids)} operations present")

    for error in errors:
        print(f"openapi.json: {error}", file=sys.stderr)
    if not errors:
        print(f"openapi.json: {len(schemas)} schemas, {len(operation_ids)} operations: generator-friendly")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
