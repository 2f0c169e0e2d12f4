//! Microsoft Graph users delta: `@odata.nextLink` within a round, `@odata.deltaLink` at
//! its end, `@removed` in later rounds, `410 Gone` for an expired token.

use super::*;

const DELTA: &str = "/graph/v1.0/users/delta";

/// Reads one round from `url` (with `Prefer: odata.maxpagesize=page`): the pages and the
/// delta link it ends with.
async fn round(upstream: &Upstream, url: &str, page: usize) -> (Vec<Reply>, String) {
    let prefer = format!("odata.maxpagesize={page}");
    let mut url = url.to_owned();
    let mut pages = Vec::new();
    for _ in 0..MAX_PAGES {
        let reply = upstream.get_with(&url, ("prefer", &prefer)).await;
        let body = reply.ok();
        let next = body
            .get("@odata.nextLink")
            .map(|l| l.as_str().unwrap().to_owned());
        let delta = body
            .get("@odata.deltaLink")
            .map(|l| l.as_str().unwrap().to_owned());
        pages.push(reply);
        match (next, delta) {
            (Some(next), None) => url = next,
            (None, Some(delta)) => return (pages, delta),
            other => panic!("a page has exactly one of the links: {other:?}"),
        }
    }
    panic!("the round did not end within {MAX_PAGES} pages");
}

fn values(pages: &[Reply]) -> Vec<String> {
    pages.iter().flat_map(|p| p.records("value")).collect()
}

/// Applies a round's entries to a mirror: `@removed` deletes, anything else replaces.
fn apply(mirror: &mut BTreeMap<String, String>, entries: Vec<String>) {
    for entry in entries {
        let id = id_text(&parse(&entry)["id"]);
        match parse(&entry).get("@removed") {
            Some(_) => mirror.remove(&id),
            None => mirror.insert(id, entry),
        };
    }
}

#[tokio::test]
async fn a_first_round_pages_by_next_link_to_a_delta_link_and_returns_the_truth() {
    let upstream = start(91, 230).await;
    upstream.churn("graph/delete", 3).await;
    let (pages, delta) = round(&upstream, &upstream.url(DELTA, &[]), 100).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(
        pages[0].header("preference-applied").unwrap(),
        "odata.maxpagesize=100"
    );
    let body = pages[0].json();
    assert_eq!(
        body["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users"
    );
    let next = body["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{}{DELTA}?$skiptoken=", upstream.base)),
        "{next}"
    );
    assert!(
        delta.starts_with(&format!("{}{DELTA}?$deltatoken=", upstream.base)),
        "{delta}"
    );
    let entries = values(&pages);
    assert_eq!(
        entries.len(),
        227,
        "the first round lists the users that exist"
    );
    assert!(entries.iter().all(|e| parse(e).get("@removed").is_none()));
    let guid = id_text(&parse(&entries[0])["id"]);
    assert_eq!((guid.len(), &guid[14..15]), (36, "4"), "{guid}");
    assert_eq!(mirror(entries, "id"), upstream.truth("graph", "id").await);

    // 100 a page without a preference.
    let plain = upstream.get(DELTA, &[]).await;
    assert_eq!(plain.records("value").len(), 100);
    assert_eq!(plain.header("preference-applied"), None);
}

#[tokio::test]
async fn a_later_round_from_the_delta_link_brings_changes_and_removals() {
    let upstream = start(92, 120).await;
    let (pages, delta) = round(&upstream, &upstream.url(DELTA, &[]), 50).await;
    let mut mirror = mirror(values(&pages), "id");

    let (created, _) = upstream.churn("graph/create", 3).await;
    let (updated, _) = upstream.churn("graph/update", 4).await;
    let (deleted, _) = upstream.churn("graph/delete", 12).await;
    let (pages, next_delta) = round(&upstream, &delta, 50).await;
    let entries = values(&pages);
    let removed: Vec<String> = entries
        .iter()
        .filter(|e| parse(e).get("@removed").is_some())
        .map(|e| id_text(&parse(e)["id"]))
        .collect();
    // Restorable (`changed`) and deleted for good (`deleted`), both.
    let mut reasons: Vec<Value> = entries
        .iter()
        .filter_map(|e| parse(e).get("@removed").cloned())
        .collect();
    reasons.sort_by_key(Value::to_string);
    reasons.dedup();
    assert_eq!(
        reasons,
        [json!({"reason": "changed"}), json!({"reason": "deleted"})]
    );
    let mut expected = deleted.clone();
    expected.sort();
    let mut got = removed.clone();
    got.sort();
    assert_eq!(got, expected);
    let whole: Vec<String> = entries
        .iter()
        .filter(|e| parse(e).get("@removed").is_none())
        .map(|e| id_text(&parse(e)["id"]))
        .collect();
    for id in created
        .iter()
        .chain(&updated)
        .filter(|id| !deleted.contains(id))
    {
        assert!(whole.contains(id), "{id} changed and is sent whole");
    }
    assert_eq!(whole.len() + removed.len(), entries.len());
    assert!(entries.len() <= 19, "only what changed");
    apply(&mut mirror, entries);
    assert_eq!(mirror, upstream.truth("graph", "id").await);

    // Nothing changed since: an empty round, and the same place.
    let (quiet, again) = round(&upstream, &next_delta, 50).await;
    assert_eq!(values(&quiet), Vec::<String>::new());
    assert_eq!(again, next_delta);
    // $deltatoken=latest: a delta link and no users.
    let latest = upstream.get(DELTA, &[("$deltatoken", "latest")]).await.ok();
    assert_eq!(latest["value"], json!([]));
    assert_eq!(latest["@odata.deltaLink"], next_delta.as_str());
}

#[tokio::test]
async fn expired_or_unknown_tokens_are_410_gone_with_a_fresh_start() {
    let upstream = start(93, 30).await;
    let first = upstream
        .get_with(
            &upstream.url(DELTA, &[]),
            ("prefer", "odata.maxpagesize=10"),
        )
        .await;
    let skip = first.ok()["@odata.nextLink"].as_str().unwrap().to_owned();
    let (_, delta) = round(&upstream, &upstream.url(DELTA, &[]), 50).await;
    assert_eq!(upstream.get_url(&delta).await.status, StatusCode::OK);

    let reply = upstream.control("graph/expire_tokens", json!({})).await;
    assert_eq!(reply["epoch"], 1);
    for url in [&delta, &skip] {
        let gone = upstream.get_url(url).await;
        assert_eq!(gone.status, StatusCode::GONE, "{url}");
        assert_eq!(gone.json()["error"]["code"], "syncStateNotFound");
        assert_eq!(
            gone.header("location").unwrap(),
            format!("{}{DELTA}", upstream.base)
        );
    }
    for token in [("$deltatoken", "bm9wZQ"), ("$skiptoken", "garbage!")] {
        assert_eq!(upstream.get(DELTA, &[token]).await.status, StatusCode::GONE);
    }
    // The Location starts a full round again.
    let (pages, _) = round(&upstream, &format!("{}{DELTA}", upstream.base), 50).await;
    assert_eq!(values(&pages).len(), 30);

    for option in ["$top", "$orderby", "$expand", "$filter"] {
        let refused = upstream.get(DELTA, &[(option, "1")]).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{option}");
        assert_eq!(refused.json()["error"]["code"], "Request_UnsupportedQuery");
    }
}
