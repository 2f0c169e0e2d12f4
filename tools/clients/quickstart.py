"""The quickstart through the Python client that openapi-python-client generates from
openapi/openapi.json (docs/clients.md): registers examples/sources/insales.json against a
sandbox, syncs it, waits for the job, reads the jobs and pages the mirror and the feed
to the end, checking what it reads. Typed: mypy --strict checks it against the client.

Usage: quickstart.py API_URL TOKEN SANDBOX_URL QUICKSTART_JSON EXPECTED_RECORDS
(the generated package `tidemark_client` on PYTHONPATH).
"""

import json
import sys
import time
from pathlib import Path
from typing import NoReturn, TypeVar
from uuid import UUID

from tidemark_client import AuthenticatedClient
from tidemark_client.api.feed import list_changes
from tidemark_client.api.jobs import get_job, list_jobs, sync_source
from tidemark_client.api.records import list_records
from tidemark_client.api.sources import create_source, get_source, list_sources, replace_source
from tidemark_client.api.streams import get_stream
from tidemark_client.models import (
    Change,
    DeletedPredicate,
    EverySecondsSchedule,
    Job,
    JobMode,
    JobStatus,
    KeysetPagination,
    KeysetPaginationType,
    Op,
    Problem,
    RecordsSpec,
    RequestSpec,
    RequestSpecQuery,
    SourceSpec,
    SourceView,
    StreamSpec,
    SyncRequest,
)
from tidemark_client.types import UNSET, Unset

DEADLINE_SECONDS = 60.0
T = TypeVar("T")


def fail(message: str) -> NoReturn:
    print(f"quickstart.py: {message}", file=sys.stderr)
    sys.exit(1)


def expect(reply: T | Problem | None, what: str) -> T:
    """The reply, when it is not a problem (or nothing: a status the document lacks)."""
    if reply is None or isinstance(reply, Problem):
        fail(f"{what}: {reply.to_dict() if isinstance(reply, Problem) else 'no reply'}")
    return reply


def within(part: object, whole: object) -> bool:
    """Whether every member of `part` is in `whole` with the same value, recursively."""
    if isinstance(part, dict) and isinstance(whole, dict):
        return all(k in whole and within(v, whole[k]) for k, v in part.items())
    if isinstance(part, list) and isinstance(whole, list):
        return len(part) == len(whole) and all(within(p, w) for p, w in zip(part, whole))
    return part == whole


def quickstart_source(sandbox: str) -> SourceSpec:
    """examples/sources/insales.json, spelled with the generated models."""
    query = RequestSpecQuery()
    query["with_deleted"] = "true"
    return SourceSpec(
        name="insales",
        base_url=sandbox,
        streams=[
            StreamSpec(
                name="products",
                request=RequestSpec(path="/insales/products.json", query=query),
                records=RecordsSpec(
                    path="",
                    key="/id",
                    updated_at="/updated_at",
                    deleted=DeletedPredicate(pointer="/archived", equals=True),
                ),
                pagination=KeysetPagination(
                    type_=KeysetPaginationType.KEYSET,
                    since_param="updated_since",
                    id_param="from_id",
                    limit_param="per_page",
                    limit=250,
                ),
                schedule=EverySecondsSchedule(every_seconds=60),
            )
        ],
    )


def main() -> None:
    api, token, sandbox, quickstart_json, expected = sys.argv[1:6]
    client = AuthenticatedClient(base_url=api, token=token, timeout=None)
    spec = quickstart_source(sandbox)

    # The typed source is the quickstart's file (the models add the defaults it leaves
    # out), and the file parses to the same models.
    from_file = json.loads(Path(quickstart_json).read_text())
    from_file["base_url"] = sandbox
    parsed = SourceSpec.from_dict(from_file)
    if not within(from_file, spec.to_dict()) or not within(parsed.to_dict(), spec.to_dict()):
        fail(f"the typed source differs from {quickstart_json}")
    if not isinstance(parsed.streams[0].pagination, KeysetPagination):
        fail(f"{quickstart_json}'s pagination parses as {parsed.streams[0].pagination!r}")

    # Register it; when it is there already (a second run), replace it.
    created = create_source.sync_detailed(client=client, body=spec)
    if created.status_code == 409:
        replaced = replace_source.sync(client=client, source="insales", body=spec)
        view: SourceView = expect(replaced, "replace_source")
    else:
        view = expect(created.parsed, f"create_source ({created.status_code})")
    stream = view.streams[0]
    if not isinstance(stream.pagination, KeysetPagination) or stream.pagination.limit != 250:
        fail(f"the registered stream reads back as {stream.pagination!r}")
    if not isinstance(stream.schedule, EverySecondsSchedule):
        fail(f"the schedule reads back as {stream.schedule!r}")

    got = expect(get_source.sync(client=client, source="insales"), "get_source")
    listed = expect(list_sources.sync(client=client), "list_sources")
    if got.name != "insales" or "insales" not in [s.name for s in listed.results]:
        fail("the source is not listed")
    missing = get_source.sync(client=client, source="no-such-source")
    if not isinstance(missing, Problem) or missing.status != 404 or missing.type_ != "not-found":
        fail(f"a missing source reads as {missing!r}")

    # Sync, and wait (bounded) for the job; a scheduled job may have been queued at
    # registration, in which case the request returns that one.
    # The body is optional, but the client sends its UNSET as JSON when it is left out.
    body = SyncRequest(mode=JobMode.INCREMENTAL)
    jobs = expect(sync_source.sync(client=client, source="insales", body=body), "sync_source").jobs
    if len(jobs) != 1:
        fail(f"sync_source queued {len(jobs)} jobs")
    job = wait(client, jobs[0].id)
    print(f"job {job.id} ({job.trigger}): {job.status}, inserted {job.stats.inserted}")

    # Every job of the stream, paged one at a time: all succeeded.
    seen: list[Job] = []
    after: str | Unset = UNSET
    while True:
        page = expect(
            list_jobs.sync(client=client, source="insales", stream="products", limit=1, after=after),
            "list_jobs",
        )
        seen.extend(page.results)
        if page.next_ is None:
            break
        after = page.next_
    if not seen or any(j.status != JobStatus.SUCCEEDED for j in seen):
        fail(f"jobs: {[(j.id, j.status) for j in seen]}")
    inserted = sum(j.stats.inserted for j in seen)

    streamed = expect(get_stream.sync(client=client, source="insales", stream="products"), "get_stream")
    if streamed.cursor is None or not isinstance(streamed.lag_seconds, float):
        fail(f"the stream has cursor {streamed.cursor!r}, lag {streamed.lag_seconds!r}")

    # The mirror, paged to the end.
    keys: set[str] = set()
    cursor: str | Unset = UNSET
    while True:
        records = expect(
            list_records.sync(client=client, source="insales", stream="products", limit=100, after=cursor),
            "list_records",
        )
        keys.update(r.key for r in records.results)
        if records.next_ is None:
            break
        cursor = records.next_
    if len(keys) != int(expected) or inserted < len(keys):
        fail(f"{len(keys)} records mirrored, {inserted} inserted; expected {expected}")

    # The feed, from the beginning to the end: one change per live record.
    changes: list[Change] = []
    since: str | Unset = UNSET
    while True:
        feed = expect(
            list_changes.sync(client=client, since=since, limit=100, stream="insales/products"),
            "list_changes",
        )
        changes.extend(feed.results)
        since = feed.until
        if not feed.has_more:
            break
    live = {c.key for c in changes if c.op != Op.DELETE}
    if live != keys:
        fail(f"the feed has {len(live)} live records, the mirror {len(keys)}")
    print(
        f"quickstart.py: {len(seen)} jobs, {len(keys)} records, {len(changes)} changes "
        "read through the generated Python client"
    )


def wait(client: AuthenticatedClient, job_id: UUID) -> Job:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        job = expect(get_job.sync(client=client, id=job_id), "get_job")
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
            if job.status != JobStatus.SUCCEEDED:
                fail(f"job {job.id} {job.status}: {job.error}")
            return job
        time.sleep(0.1)
    fail(f"job {job_id} did not finish in {DEADLINE_SECONDS} s")


if __name__ == "__main__":
    main()
