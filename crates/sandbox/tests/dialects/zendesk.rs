//! Zendesk's cursor-based incremental ticket export: `start_time` then `cursor`,
//! `end_of_stream`, the withheld last minute, deleted tickets in the stream.

use super::*;

const EXPORT: &str = "/zendesk/api/v2/incremental/tickets/cursor.json";

/// Follows `after_url` (with `extra` appended, as the client must resend them) from
/// `first` until `end_of_stream`; returns every page and the tickets' texts.
async fn export(upstream: &Upstream, first: &str, extra: &str) -> (Vec<Value>, Vec<String>) {
    let mut url = first.to_owned();
    let (mut pages, mut tickets) = (Vec::new(), Vec::new());
    for _ in 0..MAX_PAGES {
        let reply = upstream.get_url(&url).await;
        let page = reply.ok();
        tickets.extend(reply.records("tickets"));
        let end = page["end_of_stream"].as_bool().unwrap();
        url = format!("{}{extra}", page["after_url"].as_str().unwrap());
        pages.push(page);
        if end {
            return (pages, tickets);
        }
    }
    panic!("the export did not end within {MAX_PAGES} pages");
}

fn tickets(pages: &[Value]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| {
            p["tickets"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::to_string)
        })
        .collect()
}

/// The sandbox clock, in Unix seconds (a churn of nothing says what it is).
async fn now(upstream: &Upstream) -> i64 {
    let reply = upstream
        .control("zendesk/update", json!({ "count": 0 }))
        .await;
    let now = reply["now"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(now)
        .unwrap()
        .timestamp()
}

fn live(tickets: &[String]) -> BTreeMap<String, String> {
    mirror(tickets.to_vec(), "id")
        .into_iter()
        .filter(|(_, t)| parse(t)["status"] != "deleted")
        .collect()
}

#[tokio::test]
async fn export_follows_cursors_to_end_of_stream_with_deleted_tickets_in_it() {
    let upstream = start(51, 230).await;
    let (deleted, _) = upstream.churn("zendesk/delete", 4).await;
    upstream.tick(61).await;
    let first = upstream.url(EXPORT, &[("start_time", "0"), ("per_page", "100")]);
    let (pages, tickets) = export(&upstream, &first, "&per_page=100").await;
    assert_eq!(pages.len(), 3);
    let ends: Vec<&Value> = pages.iter().map(|p| &p["end_of_stream"]).collect();
    assert_eq!(ends, [&json!(false), &json!(false), &json!(true)]);
    assert!(pages.iter().all(|p| p["before_cursor"].is_null()));
    let after = pages[0]["after_url"].as_str().unwrap();
    assert_eq!(
        after,
        format!(
            "{}{EXPORT}?cursor={}",
            upstream.base,
            pages[0]["after_cursor"].as_str().unwrap()
        )
    );

    assert_eq!(tickets.len(), 230, "deleted tickets stay in the export");
    let order: Vec<(i64, u64)> = tickets
        .iter()
        .map(|t| {
            let t = parse(t);
            (
                t["generated_timestamp"].as_i64().unwrap(),
                t["id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "by (updated_at, id)");
    let all = mirror(tickets.clone(), "id");
    assert!(
        deleted
            .iter()
            .all(|id| parse(&all[id])["status"] == "deleted")
    );
    assert_eq!(live(&tickets), upstream.truth("zendesk", "id").await);
}

#[tokio::test]
async fn the_last_minute_is_withheld_and_a_kept_cursor_returns_what_changed_since() {
    let upstream = start(52, 100).await;
    let first = upstream.get(EXPORT, &[("start_time", "0")]).await.ok();
    let withheld = 100 - first["tickets"].as_array().unwrap().len();
    assert!(withheld > 0, "tickets changed within the last minute");
    assert_eq!(first["end_of_stream"], true);
    let cursor = first["after_cursor"].as_str().unwrap().to_owned();

    upstream.tick(61).await;
    let rest = upstream.get(EXPORT, &[("cursor", &cursor)]).await.ok();
    assert_eq!(rest["tickets"].as_array().unwrap().len(), withheld);
    let cursor = rest["after_cursor"].as_str().unwrap().to_owned();

    let (updated, _) = upstream.churn("zendesk/update", 5).await;
    let soon = upstream.get(EXPORT, &[("cursor", &cursor)]).await.ok();
    assert_eq!(soon["tickets"], json!([]));
    assert_eq!(soon["end_of_stream"], true);
    assert_eq!(
        soon["after_cursor"],
        cursor.as_str(),
        "an empty page keeps the place"
    );
    upstream.tick(61).await;
    let changes = upstream.get(EXPORT, &[("cursor", &cursor)]).await.ok();
    let mut seen = ids(&tickets(std::slice::from_ref(&changes)), "id");
    seen.sort();
    let mut expected = updated.clone();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(changes["end_of_stream"], true);

    // A start_time within the last minute is refused.
    let recent = (now(&upstream).await - 30).to_string();
    let refused = upstream.get(EXPORT, &[("start_time", &recent)]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["error"], "InvalidValue");
}

#[tokio::test]
async fn start_time_is_inclusive_and_exclude_deleted_leaves_deleted_tickets_out() {
    let upstream = start(53, 40).await;
    let (touched, at) = upstream.churn("zendesk/mass_update", 3).await;
    let (deleted, _) = upstream.churn("zendesk/delete", 2).await;
    upstream.tick(61).await;
    let at = chrono::DateTime::parse_from_rfc3339(&at)
        .unwrap()
        .timestamp();
    let from = |start: i64, extra: &[(&'static str, &'static str)]| {
        let start = start.to_string();
        let mut params = vec![("start_time", start)];
        params.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let upstream = &upstream;
        async move {
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = upstream.get(EXPORT, &params).await.ok();
            tickets(&[page])
        }
    };
    let all = from(at, &[]).await;
    let mut changed: Vec<String> = touched.iter().chain(&deleted).cloned().collect();
    changed.sort();
    changed.dedup();
    let mut seen = ids(&all, "id");
    seen.sort();
    assert_eq!(seen, changed, "on or after start_time");
    assert_eq!(
        from(at + 1, &[]).await.len(),
        2,
        "only the deletions are later"
    );
    let live_only = from(at, &[("exclude_deleted", "true")]).await;
    assert!(live_only.iter().all(|t| parse(t)["status"] != "deleted"));
    assert_eq!(live_only.len(), changed.len() - deleted.len());

    for params in [
        &[][..],
        &[("cursor", "bm90IGEgY3Vyc29y")][..],
        &[("start_time", "0"), ("per_page", "0")][..],
        &[("start_time", "soon")][..],
    ] {
        let reply = upstream.get(EXPORT, params).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{params:?}");
    }
}
