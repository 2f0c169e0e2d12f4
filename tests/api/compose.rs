//! The composable pieces of docs/design.md §4a as the control plane takes them: specs of
//! real APIs that mix a since filter, templates, cursors and resume points are accepted
//! and read back as given; every misuse of a new field is refused with 422 and its JSON
//! pointer; the cursors they keep can be set through the API.

use serde_json::{Value, json};

use crate::support::{assert_problem, spawn};

/// A source of one stream with `pagination`, `request` and `records`.
fn source(pagination: Value, request: Value, records: Value) -> Value {
    json!({
        "name": "real",
        "base_url": "http://127.0.0.1:9000",
        "streams": [{"name": "s", "request": request, "records": records, "pagination": pagination}]
    })
}

fn with_updated_at() -> Value {
    json!({"path": "/data", "key": "/id", "updated_at": "/updated_at"})
}

fn without_updated_at() -> Value {
    json!({"path": "/data", "key": "/id"})
}

/// The real APIs of docs/real-apis.md, each as one stream.
fn real_apis() -> Value {
    let stream = |name: &str, request: Value, records: Value, pagination: Value| json!({"name": name, "request": request, "records": records, "pagination": pagination});
    json!({
        "name": "real",
        "base_url": "http://127.0.0.1:9000",
        "streams": [
            stream("github",
                json!({"path": "/repos/o/r/issues",
                       "query": {"state": "all", "sort": "updated", "direction": "asc"}}),
                json!({"key": "/id", "updated_at": "/updated_at"}),
                json!({"type": "link", "limit_param": "per_page", "limit": 100,
                       "since": {"param": "since", "format": "iso8601", "order": "since"}})),
            stream("shopify",
                json!({"path": "/admin/api/2024-01/products.json"}),
                json!({"path": "/products", "key": "/id", "updated_at": "/updated_at"}),
                json!({"type": "link", "limit_param": "limit", "limit": 250,
                       "since": {"param": "updated_at_min", "lookback_seconds": 5}})),
            stream("stripe",
                json!({"path": "/v1/customers", "query": {"starting_after": "{{cursor}}", "limit": "{{limit}}"}}),
                json!({"path": "/data", "key": "/id"}),
                json!({"type": "token", "until": {"last_record": "/id"},
                       "done": {"pointer": "/has_more", "equals": false}})),
            stream("zendesk",
                json!({"path": "/api/v2/incremental/tickets/cursor.json", "query": {"cursor": "{{cursor}}"}}),
                json!({"path": "/tickets", "key": "/id", "updated_at": "/updated_at"}),
                json!({"type": "token", "until": "/after_cursor", "limit_param": "per_page", "limit": 1000,
                       "since": {"param": "start_time", "format": "unix", "initial": "1532034771"},
                       "done": {"pointer": "/end_of_stream", "equals": true}})),
            stream("hubspot",
                json!({"method": "POST", "path": "/crm/v3/objects/contacts/search",
                       "body": {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate",
                                    "operator": "GTE", "value": "{{since}}"}]}],
                                "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
                                "after": "{{cursor}}", "limit": "{{limit}}"}}),
                json!({"path": "/results", "key": "/id", "updated_at": "/updatedAt"}),
                json!({"type": "token", "until": "/paging/next/after", "limit": 200, "resume": "restart",
                       "since": {"format": "unix_ms", "initial": "0"}})),
            stream("jira",
                json!({"method": "POST", "path": "/rest/api/3/search/jql",
                       "body": {"jql": "updated >= \"{{since}}\" ORDER BY updated, key",
                                "nextPageToken": "{{cursor}}", "maxResults": "{{limit}}"}}),
                json!({"path": "/issues", "key": "/id", "updated_at": "/fields/updated"}),
                json!({"type": "token", "until": "/nextPageToken", "limit": 100, "resume": "restart",
                       "since": {"format": {"pattern": "%Y/%m/%d %H:%M"}, "lookback_seconds": 60,
                                 "initial": "1970/01/01 00:00"}})),
            stream("salesforce",
                json!({"path": "/services/data/v60.0/query",
                       "query": {"q": "SELECT Id FROM Account WHERE SystemModstamp >= {{since}} ORDER BY SystemModstamp, Id"}}),
                json!({"path": "/records", "key": "/Id", "updated_at": "/SystemModstamp"}),
                json!({"type": "link", "next": "/nextRecordsUrl",
                       "since": {"format": "iso8601", "initial": "1970-01-01T00:00:00Z"},
                       "done": {"pointer": "/done", "equals": true}})),
            stream("graph",
                json!({"path": "/v1.0/users/delta", "query": {"$select": "displayName"}}),
                json!({"path": "/value", "key": "/id",
                       "deleted": {"pointer": "/@removed", "present": true}}),
                json!({"type": "link", "next": "/@odata.nextLink",
                       "resume": {"pointer": "/@odata.deltaLink"}})),
            stream("drf",
                json!({"path": "/api/items/"}),
                json!({"path": "/results", "key": "/id"}),
                json!({"type": "link", "next": "/next", "resume": "last_page"})),
            stream("google",
                json!({"path": "/calendar/v3/calendars/primary/events"}),
                json!({"path": "/items", "key": "/id"}),
                json!({"type": "token", "since_param": "pageToken", "until": "/nextPageToken",
                       "limit_param": "maxResults", "limit": 250,
                       "resume": {"pointer": "/nextSyncToken"}})),
            stream("couchdb",
                json!({"path": "/db/_changes", "query": {"include_docs": "true"}}),
                json!({"path": "/results", "key": "/id"}),
                json!({"type": "token", "until": "/last_seq", "limit_param": "limit", "limit": 1000,
                       "done": {"pointer": "/pending", "equals": 0}})),
            stream("postgrest",
                json!({"path": "/items", "query": {"order": "updated_at.asc,id.asc"}}),
                json!({"key": "/id", "updated_at": "/updated_at"}),
                json!({"type": "keyset", "limit_param": "limit", "limit": 1000,
                       "query": {"since": {"updated_at": "gte.{{since}}"},
                                 "after": {"or": "(updated_at.gt.{{since}},and(updated_at.eq.{{since}},id.gt.{{from_id}}))"}}})),
            stream("slack",
                json!({"path": "/api/conversations.history",
                       "query": {"channel": "C123", "oldest": "{{since}}", "cursor": "{{cursor}}"}}),
                json!({"path": "/messages", "key": "/ts", "updated_at": "/ts"}),
                json!({"type": "token", "until": "/response_metadata/next_cursor", "limit_param": "limit",
                       "limit": 200, "resume": "restart",
                       "since": {"format": "verbatim", "lookback_seconds": 0},
                       "done": {"pointer": "/has_more", "equals": false}})),
            stream("pages",
                json!({"path": "/pages"}),
                json!({"path": "/items", "key": "/id"}),
                json!({"type": "offset", "page_param": "page", "limit_param": "per_page",
                       "next_page": "/meta/next_page"})),
            stream("settings",
                json!({"path": "/settings", "headers": {"If-Modified-Since": "{{since}}"}}),
                json!({"path": "/data", "key": "/key"}),
                json!({"type": "none", "since": {"format": {"pattern": "%a, %d %b %Y %H:%M:%S GMT"},
                                                 "from": "sync_start"}}))
        ]
    })
}

/// Every stream of [`real_apis`] is accepted, reads back with its new fields as given
/// (and the defaults filled in), and what is read back can be sent back unchanged.
#[tokio::test]
async fn specs_of_real_apis_are_accepted_and_read_back_as_given() {
    let app = spawn().await;
    let spec = real_apis();
    let created = app.post("/v1/sources", &spec).await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let read: Value = app.get_json("/v1/sources/real").await;
    let streams = read["streams"].as_array().unwrap();
    assert_eq!(streams.len(), spec["streams"].as_array().unwrap().len());
    for (given, read) in spec["streams"].as_array().unwrap().iter().zip(streams) {
        let name = &given["name"];
        for (field, value) in given["pagination"].as_object().unwrap() {
            if field == "since" {
                for (member, value) in value.as_object().unwrap() {
                    assert_eq!(
                        &read["pagination"]["since"][member], value,
                        "{name}: since.{member}"
                    );
                }
            } else {
                assert_eq!(&read["pagination"][field], value, "{name}: {field}");
            }
        }
        for (field, value) in given["request"].as_object().unwrap() {
            assert_eq!(&read["request"][field], value, "{name}: request.{field}");
        }
    }
    let by_name = |name: &str| streams.iter().find(|s| s["name"] == name).unwrap().clone();
    // The defaults a parsed stream settles.
    assert_eq!(
        by_name("shopify")["pagination"]["since"]["from"],
        "max_record"
    );
    assert_eq!(
        by_name("shopify")["pagination"]["since"]["format"],
        "iso8601"
    );
    assert_eq!(by_name("graph")["pagination"].get("since"), None);
    // Presence alone marks Graph's removals: no `equals` is settled beside it.
    assert_eq!(
        by_name("graph")["records"]["deleted"],
        json!({"pointer": "/@removed", "present": true})
    );
    assert_eq!(
        by_name("settings")["pagination"]["since"]["lookback_seconds"],
        2
    );
    assert_eq!(by_name("postgrest")["pagination"].get("since_param"), None);

    let mut again = read.clone();
    for field in ["created_at", "updated_at"] {
        again.as_object_mut().unwrap().remove(field);
    }
    let put = app.put("/v1/sources/real", &again).await;
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    let reread: Value = app.get_json("/v1/sources/real").await;
    assert_eq!(reread["streams"], read["streams"]);
}

#[tokio::test]
async fn misused_composable_fields_are_refused_with_their_pointer() {
    let app = spawn().await;
    let get = |path: &str| json!({"path": path});
    let token = |extra: Value| {
        let mut pagination = json!({"type": "token", "until": "/next"});
        pagination
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        pagination
    };
    let p = "/streams/0/pagination";
    let cases: Vec<(&str, Value, String)> = vec![
        (
            "a placeholder the strategy never has",
            source(
                json!({"type": "keyset"}),
                json!({"path": "/x", "query": {"o": "{{offset}}"}}),
                with_updated_at(),
            ),
            "/streams/0/request/query/o".into(),
        ),
        (
            "no placeholder at all",
            source(
                json!({"type": "none"}),
                get("/x/{{sinec}}"),
                without_updated_at(),
            ),
            "/streams/0/request/path".into(),
        ),
        (
            "a cursor in an offset body",
            source(
                json!({"type": "offset"}),
                json!({"method": "POST", "path": "/x", "body": {"q": {"c": "{{cursor}}"}}}),
                without_updated_at(),
            ),
            "/streams/0/request/body/q/c".into(),
        ),
        (
            "a since value on a position stream without a since filter",
            source(
                json!({"type": "position"}),
                json!({"path": "/x", "query": {"s": "{{since}}"}}),
                without_updated_at(),
            ),
            "/streams/0/request/query/s".into(),
        ),
        (
            "a limit on a link stream without one",
            source(
                json!({"type": "link"}),
                json!({"path": "/x", "headers": {"X-Limit": "{{limit}}"}}),
                without_updated_at(),
            ),
            "/streams/0/request/headers/X-Limit".into(),
        ),
        (
            "a page on a token stream",
            source(
                token(json!({})),
                json!({"path": "/x", "query": {"p": "p{{page}}"}}),
                without_updated_at(),
            ),
            "/streams/0/request/query/p".into(),
        ),
        (
            "a parent member in a stream without a parent",
            source(
                json!({"type": "none"}),
                get("/orders/{{parent./id}}/lines"),
                without_updated_at(),
            ),
            "/streams/0/request/path".into(),
        ),
        (
            "an id where only a since value is sent",
            source(
                json!({"type": "keyset", "query": {"since": {"x": "{{from_id}}"}, "after": {}}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/query/since/x"),
        ),
        (
            "keyset filter maps beside since_param",
            source(
                json!({"type": "keyset", "since_param": "s", "query": {"since": {}, "after": {}}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since_param"),
        ),
        (
            "keyset filter maps beside id_param",
            source(
                json!({"type": "keyset", "id_param": "i", "query": {"since": {}, "after": {}}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/id_param"),
        ),
        (
            "keyset filter maps without after",
            source(
                json!({"type": "keyset", "query": {"since": {}}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/query"),
        ),
        (
            "verbatim with the default lookback",
            source(
                json!({"type": "offset", "since": {"format": "verbatim"}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since/lookback_seconds"),
        ),
        (
            "verbatim with a lookback",
            source(
                json!({"type": "link", "since": {"param": "s", "format": "verbatim", "lookback_seconds": 5}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since/lookback_seconds"),
        ),
        (
            "verbatim from the sync start",
            source(
                json!({"type": "offset", "since": {"format": "verbatim", "lookback_seconds": 0, "from": "sync_start"}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since/from"),
        ),
        (
            "verbatim without record times",
            source(
                json!({"type": "offset", "since": {"format": "verbatim", "lookback_seconds": 0}}),
                get("/x"),
                without_updated_at(),
            ),
            "/streams/0/records/updated_at".into(),
        ),
        (
            "max_record without record times",
            source(
                json!({"type": "link", "since": {"param": "s", "from": "max_record"}}),
                get("/x"),
                without_updated_at(),
            ),
            "/streams/0/records/updated_at".into(),
        ),
        (
            "seek mode without record times",
            source(
                json!({"type": "offset", "since": {"order": "since"}}),
                get("/x"),
                without_updated_at(),
            ),
            "/streams/0/records/updated_at".into(),
        ),
        (
            "an unknown format",
            source(
                json!({"type": "offset", "since": {"format": "rfc2822"}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since/format"),
        ),
        (
            "a pattern chrono cannot read",
            source(
                json!({"type": "offset", "since": {"format": {"pattern": "%Y %Q"}}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since/format/pattern"),
        ),
        (
            "an order other than since",
            source(
                json!({"type": "offset", "since": {"order": "asc"}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since/order"),
        ),
        (
            "seek mode on a token stream resuming at its last page",
            source(
                token(json!({"since": {"param": "s", "order": "since"}})),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/resume"),
        ),
        (
            "a since filter with neither param nor template",
            source(
                json!({"type": "link", "since": {"format": "unix"}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since/param"),
        ),
        (
            "an unknown since field",
            source(
                json!({"type": "offset", "since": {"lookback": 3}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since/lookback"),
        ),
        (
            "an initial value that is not text",
            source(
                json!({"type": "offset", "since": {"initial": 0}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since/initial"),
        ),
        (
            "a since filter on a keyset stream",
            source(
                json!({"type": "keyset", "since": {"param": "s"}}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/since"),
        ),
        (
            "a deleted predicate with both equals and present",
            source(
                json!({"type": "none"}),
                get("/x"),
                json!({"path": "/data", "key": "/id",
                       "deleted": {"pointer": "/@removed", "equals": true, "present": true}}),
            ),
            "/streams/0/records/deleted/present".into(),
        ),
        (
            "a deleted predicate on absence",
            source(
                json!({"type": "none"}),
                get("/x"),
                json!({"path": "/data", "key": "/id",
                       "deleted": {"pointer": "/@removed", "present": false}}),
            ),
            "/streams/0/records/deleted/present".into(),
        ),
        (
            "resume on keyset",
            source(
                json!({"type": "keyset", "resume": "restart"}),
                get("/x"),
                with_updated_at(),
            ),
            format!("{p}/resume"),
        ),
        (
            "resume on offset",
            source(
                json!({"type": "offset", "resume": "last_page"}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/resume"),
        ),
        (
            "resume on position",
            source(
                json!({"type": "position", "resume": "last_page"}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/resume"),
        ),
        (
            "resume on none",
            source(
                json!({"type": "none", "resume": "restart"}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/resume"),
        ),
        (
            "an unknown resume",
            source(
                json!({"type": "link", "resume": "sometimes"}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/resume"),
        ),
        (
            "a resume pointer that is not a pointer",
            source(
                token(json!({"resume": {"pointer": "nextSyncToken"}})),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/resume/pointer"),
        ),
        (
            "next_page that is not a pointer",
            source(
                json!({"type": "offset", "page_param": "page", "next_page": "meta.next"}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/next_page"),
        ),
        (
            "next_page without page_param",
            source(
                json!({"type": "offset", "next_page": "/next"}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/next_page"),
        ),
        (
            "next_page on a link stream",
            source(
                json!({"type": "link", "next_page": "/next"}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/next_page"),
        ),
        (
            "last_record that is not a pointer",
            source(
                json!({"type": "token", "until": {"last_record": "id"}}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/until/last_record"),
        ),
        (
            "last_record beside another field",
            source(
                json!({"type": "token", "until": {"last_record": "/id", "from": "/x"}}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/until/from"),
        ),
        (
            "a position's last_record that is not a pointer",
            source(
                json!({"type": "position", "next": {"last_record": 7}}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/next/last_record"),
        ),
        (
            "an until that is neither",
            source(
                json!({"type": "token", "until": 5}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/until"),
        ),
        (
            "done without equals",
            source(
                json!({"type": "link", "done": {"pointer": "/has_more"}}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/done"),
        ),
        (
            "done without a pointer",
            source(
                json!({"type": "offset", "done": {"equals": false}}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/done"),
        ),
        (
            "done with a pointer that is not one",
            source(
                json!({"type": "none", "done": {"pointer": "has_more", "equals": false}}),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/done/pointer"),
        ),
        (
            "done with an unknown field",
            source(
                token(json!({"done": {"pointer": "/x", "equals": 1, "not": true}})),
                get("/x"),
                without_updated_at(),
            ),
            format!("{p}/done/not"),
        ),
        (
            "a token body without the token once since is the filter",
            source(
                token(json!({"since": {"format": "unix"}})),
                json!({"method": "POST", "path": "/x", "body": {"since": "{{since}}"}}),
                without_updated_at(),
            ),
            "/streams/0/request/body".into(),
        ),
    ];
    for (what, spec, pointer) in cases {
        let problem =
            assert_problem(app.post("/v1/sources", &spec).await, 422, "invalid-spec").await;
        assert_eq!(problem["pointer"], pointer, "{what}: {problem}");
    }
    let list: Value = app.get_json("/v1/sources").await;
    assert_eq!(list["results"], json!([]));
}

/// The first version's body placeholders stay valid on every strategy (docs/design.md
/// §4 documented them for any stream with a body).
#[tokio::test]
async fn the_first_body_placeholders_stay_valid_on_every_strategy() {
    let app = spawn().await;
    let body =
        json!({"method": "POST", "path": "/x", "body": {"s": "{{since}}", "n": "{{limit}}"}});
    for pagination in [
        json!({"type": "none"}),
        json!({"type": "position"}),
        json!({"type": "link"}),
        json!({"type": "offset"}),
    ] {
        let spec = source(pagination.clone(), body.clone(), without_updated_at());
        let created = app.post("/v1/sources", &spec).await;
        assert_eq!(created.status(), 201, "{pagination}");
        assert_eq!(app.delete("/v1/sources/real").await.status(), 204);
    }
}

#[tokio::test]
async fn the_cursors_of_composed_streams_can_be_set() {
    let app = spawn().await;
    let spec = json!({
        "name": "c",
        "base_url": "http://127.0.0.1:9000",
        "streams": [
            {"name": "link", "request": {"path": "/l"}, "records": {"key": "/id"},
             "pagination": {"type": "link", "since": {"param": "since", "format": "unix"}}},
            {"name": "plain", "request": {"path": "/p"}, "records": {"key": "/id"},
             "pagination": {"type": "link"}},
            {"name": "token", "request": {"path": "/t"}, "records": {"key": "/id"},
             "pagination": {"type": "token", "until": "/next", "resume": "restart",
                            "since": {"param": "since"}}},
            {"name": "single", "request": {"path": "/s"}, "records": {"key": "/id"},
             "pagination": {"type": "none", "since": {"param": "since", "format": "unix"}}},
            {"name": "verbatim", "request": {"path": "/v"}, "records": {"key": "/id", "updated_at": "/ts"},
             "pagination": {"type": "offset", "since": {"format": "verbatim", "lookback_seconds": 0}}}
        ]
    });
    assert_eq!(app.post("/v1/sources", &spec).await.status(), 201);
    let number: Value = serde_json::from_str("1684739969.358085").unwrap();
    let accepted = [
        ("link", json!({"high_water": "1705746600"})),
        (
            "link",
            json!({"next": "http://127.0.0.1:9000/l?page=2", "high_water": "1705746600"}),
        ),
        ("token", json!({"high_water": "2024-01-20T10:30:00Z"})),
        (
            "token",
            json!({"token": "t", "high_water": "2024-01-20T10:30:00Z"}),
        ),
        ("single", json!({"high_water": "1705746600"})),
        ("verbatim", json!({ "high_water": number })),
    ];
    for (stream, cursor) in accepted {
        let path = format!("/v1/sources/c/streams/{stream}/cursor");
        let put = app.put(&path, &json!({ "cursor": cursor })).await;
        assert_eq!(put.status(), 200, "{stream}: {cursor}");
        let got: Value = app.get_json(&path).await;
        assert_eq!(got["cursor"], cursor, "{stream}");
    }
    let refused = [
        (
            "plain",
            json!({"high_water": "1705746600"}),
            "/cursor/high_water",
        ),
        ("link", json!({}), "/cursor"),
        ("link", json!({"high_water": true}), "/cursor/high_water"),
        ("token", json!({"position": 1}), "/cursor/position"),
        (
            "single",
            json!({"next": "http://127.0.0.1:9000/s"}),
            "/cursor/next",
        ),
    ];
    for (stream, cursor, pointer) in refused {
        let path = format!("/v1/sources/c/streams/{stream}/cursor");
        let problem = assert_problem(
            app.put(&path, &json!({ "cursor": cursor })).await,
            422,
            "invalid-spec",
        )
        .await;
        assert_eq!(problem["pointer"], pointer, "{stream}: {problem}");
    }
}
