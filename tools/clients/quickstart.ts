// The quickstart through TypeScript types that openapi-typescript generates from
// openapi/openapi.json, with openapi-fetch (docs/clients.md): registers the quickstart
// source (examples/sources/insales.json, as a typed literal), syncs it, waits for the
// job, reads the jobs and pages the feed to the end. `tsc --strict --noEmit` checks it
// against the generated types; .ci/clients.sh also runs it against the app.
//
// Usage: node dist/quickstart.js API_URL TOKEN SANDBOX_URL

import createClient from "openapi-fetch";

import type { components, paths } from "./generated/tidemark.js";

type SourceSpec = components["schemas"]["SourceSpec"];
type Job = components["schemas"]["Job"];
type Change = components["schemas"]["Change"];
type Problem = components["schemas"]["Problem"];

/** examples/sources/insales.json, pointed at `sandbox`. */
function quickstartSource(sandbox: string): SourceSpec {
  return {
    name: "insales",
    base_url: sandbox,
    streams: [
      {
        name: "products",
        request: { path: "/insales/products.json", query: { with_deleted: "true" } },
        records: {
          path: "",
          key: "/id",
          updated_at: "/updated_at",
          deleted: { pointer: "/archived", equals: true },
        },
        pagination: {
          type: "keyset",
          since_param: "updated_since",
          id_param: "from_id",
          limit_param: "per_page",
          limit: 250,
        },
        schedule: { every_seconds: 60 },
      },
    ],
  };
}

function fail(message: string): never {
  console.error(`quickstart.ts: ${message}`);
  process.exit(1);
}

/** The reply's data, or the end of the run with its problem. */
function expect<T>(reply: { data?: T; error?: Problem | unknown; response: Response }, what: string): T {
  if (reply.data === undefined) {
    fail(`${what}: ${reply.response.status} ${JSON.stringify(reply.error)}`);
  }
  return reply.data;
}

async function main(): Promise<void> {
  const [api, token, sandbox] = process.argv.slice(2);
  if (!api || !token || !sandbox) {
    fail("usage: quickstart.js API_URL TOKEN SANDBOX_URL");
  }
  const client = createClient<paths>({
    baseUrl: api,
    headers: { Authorization: `Bearer ${token}` },
  });
  const spec = quickstartSource(sandbox);

  // Register it; when it is there already (the Python program's run), replace it.
  const created = await client.POST("/v1/sources", { body: spec });
  const view =
    created.response.status === 409
      ? expect(
          await client.PUT("/v1/sources/{source}", { params: { path: { source: "insales" } }, body: spec }),
          "replace_source",
        )
      : expect(created, "create_source");
  const pagination = view.streams[0]?.pagination;
  if (pagination?.type !== "keyset" || pagination.limit !== 250) {
    fail(`the registered stream reads back as ${JSON.stringify(pagination)}`);
  }

  const missing = await client.GET("/v1/sources/{source}", { params: { path: { source: "no-such-source" } } });
  if (missing.error?.status !== 404 || missing.error.type !== "not-found") {
    fail(`a missing source reads as ${JSON.stringify(missing.error)}`);
  }

  const queued = expect(
    await client.POST("/v1/sources/{source}/sync", {
      params: { path: { source: "insales" } },
      body: { mode: "incremental" },
    }),
    "sync_source",
  );
  const first = queued.jobs[0];
  if (queued.jobs.length !== 1 || first === undefined) {
    fail(`sync_source queued ${queued.jobs.length} jobs`);
  }
  const job = await wait(client, first.id);
  console.log(`job ${job.id} (${job.trigger}): ${job.status}, inserted ${job.stats.inserted}`);

  // Every job of the stream, paged one at a time.
  const jobs: Job[] = [];
  let after: string | undefined;
  for (;;) {
    const query = { source: "insales", stream: "products", limit: 1, ...(after ? { after } : {}) };
    const page = expect(await client.GET("/v1/jobs", { params: { query } }), "list_jobs");
    jobs.push(...page.results);
    if (page.next == null) break;
    after = page.next;
  }
  if (jobs.length === 0 || jobs.some((j) => j.status !== "succeeded")) {
    fail(`jobs: ${JSON.stringify(jobs.map((j) => [j.id, j.status]))}`);
  }

  // The feed, from the beginning to the end.
  const changes: Change[] = [];
  let since: string | undefined;
  for (;;) {
    const query = { limit: 100, stream: "insales/products", ...(since ? { since } : {}) };
    const page = expect(await client.GET("/v1/changes", { params: { query } }), "list_changes");
    changes.push(...page.results);
    since = page.until;
    if (!page.has_more) break;
  }
  const live = new Set(changes.filter((c) => c.op !== "delete").map((c) => c.key));
  if (live.size === 0) {
    fail("the feed has no live record");
  }
  console.log(
    `quickstart.ts: ${jobs.length} jobs, ${live.size} live records, ${changes.length} changes read through the generated TypeScript types`,
  );
}

async function wait(client: ReturnType<typeof createClient<paths>>, id: string): Promise<Job> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const job = expect(await client.GET("/v1/jobs/{id}", { params: { path: { id } } }), "get_job");
    if (job.status === "succeeded") return job;
    if (job.status === "failed" || job.status === "cancelled") {
      fail(`job ${job.id} ${job.status}: ${JSON.stringify(job.error)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  fail(`job ${id} did not finish in 60 s`);
}

await main();
