"""dlt against the tidemark sandbox's keyset endpoint: a full sync, then an incremental sync
after 1% of the records changed, with `dlt.sources.incremental` on `updated_at` and merge
on `id` into duckdb, in pages of 1000 (the same endpoint, data and page size as
tidemark's benchmark). Prints both figures and the tidemark/dlt ratios, taking tidemark's
figures from the benchmark's JSON.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time

import dlt
import duckdb
import requests

PAGE = 1000


def products(base, session):
    @dlt.resource(name="products", primary_key="id", write_disposition="merge")
    def resource(
        updated_at=dlt.sources.incremental("updated_at", initial_value="1970-01-01T00:00:00Z"),
    ):
        # Keyset paging: (updated_at, id) of the last record, passed back verbatim; the
        # first request of a run starts at the stored high-water mark, inclusively (dlt
        # drops the records at exactly that value it has already seen).
        since, from_id = updated_at.start_value, None
        while True:
            params = {"with_deleted": "true", "per_page": PAGE, "updated_since": since}
            if from_id is not None:
                params["from_id"] = from_id
            reply = session.get(f"{base}/insales/products.json", params=params, timeout=60)
            reply.raise_for_status()
            page = reply.json()
            if not page:
                return
            yield page
            since, from_id = page[-1]["updated_at"], page[-1]["id"]

    return resource


def run(pipeline, base, session):
    started = time.monotonic()
    info = pipeline.run(products(base, session))
    seconds = time.monotonic() - started
    info.raise_on_failed_jobs()
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="the sandbox, http://127.0.0.1:PORT")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--tidemark", help="the benchmark's JSON (bench.json)")
    parser.add_argument("--out", help="write dlt's figures here as JSON")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="tidemark-dlt-")
    try:
        database = f"{workdir}/products.duckdb"
        pipeline = dlt.pipeline(
            pipeline_name="tidemark_bench",
            pipelines_dir=f"{workdir}/pipelines",
            destination=dlt.destinations.duckdb(database),
            dataset_name="sandbox",
        )
        session = requests.Session()
        full = run(pipeline, args.base, session)
        print(f"dlt full sync: {args.records} records in {full:.1f} s "
              f"({args.records / full:,.0f} records/s)", file=sys.stderr)

        changed = args.records // 100
        session.post(f"{args.base}/_control/keyset/update", json={"count": changed},
                     timeout=60).raise_for_status()
        incremental = run(pipeline, args.base, session)
        print(f"dlt incremental after {changed} changed: {incremental:.2f} s", file=sys.stderr)

        with duckdb.connect(database, read_only=True) as db:
            rows = db.execute(
                f"SELECT COUNT(*) FROM {pipeline.dataset_name}.products").fetchone()[0]
        if rows != args.records:
            sys.exit(f"dlt holds {rows} rows, not {args.records}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    figures = {
        "records": args.records,
        "dlt_version": dlt.__version__,
        "full_seconds": full,
        "full_records_per_second": args.records / full,
        "incremental_changed": changed,
        "incremental_seconds": incremental,
    }
    if args.out:
        with open(args.out, "w") as out:
            json.dump(figures, out, indent=2)

    print(f"\ndlt {dlt.__version__} vs tidemark, {args.records} records, pages of {PAGE}\n")
    rows = [("sync", "dlt"), ("full sync, s", f"{full:.1f}"),
            ("incremental (1% changed), s", f"{incremental:.2f}")]
    columns = []
    if args.tidemark:
        with open(args.tidemark) as f:
            bench = json.load(f)
        if bench["records"] != args.records:
            sys.exit(f"{args.tidemark} is for {bench['records']} records, not {args.records}")
        for result in bench["results"]:
            columns.append(result)
            db = result["database"]
            rows[0] += (f"tidemark ({db})", f"tidemark/dlt speed ({db})")
            rows[1] += (f"{result['full']['seconds']:.1f}",
                        f"{full / result['full']['seconds']:.1f}x")
            rows[2] += (f"{result['incremental']['wall_seconds']:.2f}",
                        f"{incremental / result['incremental']['wall_seconds']:.1f}x")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if i == 0:
            print("|-" + "-|-".join("-" * w for w in widths) + "-|")


if __name__ == "__main__":
    main()
