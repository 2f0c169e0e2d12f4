//! PostgREST: `column=op.value` filters, the keyset `or=(…)` form, `order`, `limit` and
//! `offset`, `Content-Range`, microsecond timestamps, PostgREST's errors.

use super::*;

const ITEMS: &str = "/postgrest/items";
const ORDER: (&str, &str) = ("order", "updated_at.asc,id.asc");

/// Keyset pages of `limit`: the first with `updated_at=gte.<since>`, the next ones with
/// the `or=(…)` keyset filter from the last row's values, verbatim, until a short page.
async fn walk(upstream: &Upstream, since: &str, limit: usize) -> Vec<Vec<String>> {
    let limit = limit.to_string();
    let mut after: Option<(String, String)> = None;
    let mut pages = Vec::new();
    for _ in 0..MAX_PAGES {
        let filter = match &after {
            None => ("updated_at".to_owned(), format!("gte.{since}")),
            Some((at, id)) => (
                "or".to_owned(),
                format!("(updated_at.gt.{at},and(updated_at.eq.{at},id.gt.{id}))"),
            ),
        };
        let reply = upstream
            .get(ITEMS, &[(&filter.0, &filter.1), ORDER, ("limit", &limit)])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let rows = reply.records("");
        let full = rows.len().to_string() == limit;
        after = rows.last().map(|r| {
            let r = parse(r);
            (
                r["updated_at"].as_str().unwrap().to_owned(),
                id_text(&r["id"]),
            )
        });
        pages.push(rows);
        if !full {
            return pages;
        }
    }
    panic!("paging did not end within {MAX_PAGES} pages");
}

#[tokio::test]
async fn keyset_paging_with_the_or_filter_returns_the_truth() {
    let upstream = start(101, 230).await;
    upstream.churn("postgrest/mass_update", 120).await;
    upstream.churn("postgrest/delete", 4).await;
    let pages = walk(&upstream, "1970-01-01T00:00:00Z", 50).await;
    assert_eq!(
        pages.len(),
        5,
        "226 rows: four full pages (through the tie) and a short one"
    );
    let rows: Vec<String> = pages.into_iter().flatten().collect();
    let keys: Vec<(chrono::DateTime<chrono::FixedOffset>, u64)> = rows
        .iter()
        .map(|r| {
            let r = parse(r);
            let at = chrono::DateTime::parse_from_rfc3339(r["updated_at"].as_str().unwrap());
            (at.unwrap(), r["id"].as_u64().unwrap())
        })
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "by (updated_at, id), each row once"
    );
    assert_eq!(
        mirror(rows.clone(), "id"),
        upstream.truth("postgrest", "id").await
    );
    // Microseconds, with PostgreSQL's trailing zeros dropped.
    let stamps = texts(&rows, "/updated_at");
    assert!(stamps.iter().all(|s| s.ends_with("+00:00")));
    assert!(
        stamps
            .iter()
            .any(|s| s.len() < "2017-09-03T20:59:58.123456+00:00".len())
    );
    assert!(
        stamps
            .iter()
            .any(|s| s.len() == "2017-09-03T20:59:58.123456+00:00".len())
    );
}

#[tokio::test]
async fn gte_is_inclusive_and_gt_exclusive_to_the_microsecond() {
    let upstream = start(102, 40).await;
    let (touched, _) = upstream.churn("postgrest/mass_update", 3).await;
    let truth = upstream.truth("postgrest", "id").await;
    let stamp = parse(&truth[&touched[0]])["updated_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let found = |filter: String| {
        let upstream = &upstream;
        async move {
            let reply = upstream
                .get(ITEMS, &[("updated_at", &filter), ("order", "id")])
                .await;
            ids(&reply.records(""), "id")
        }
    };
    assert_eq!(found(format!("gte.{stamp}")).await, touched);
    assert!(found(format!("gt.{stamp}")).await.is_empty());
    assert_eq!(found(format!("eq.{stamp}")).await, touched);
    assert_eq!(found(format!("lt.{stamp}")).await.len(), 37);
    // The same instant written otherwise; a seventh digit rounds.
    let at = chrono::DateTime::parse_from_rfc3339(&stamp).unwrap();
    let offset = at.with_timezone(&chrono::FixedOffset::east_opt(3 * 3600).unwrap());
    assert_eq!(
        found(format!(
            "eq.{}",
            offset.to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
        ))
        .await,
        touched
    );
    let nanos = at
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        .replace("000Z", "400Z");
    assert_eq!(found(format!("eq.{nanos}")).await, touched);
    assert_eq!(found(format!("not.lt.{stamp}")).await, touched);
    // '+' unescaped is a space, and then not a time.
    let url = format!(
        "{}{ITEMS}?updated_at=gte.2017-09-03T20:59:58+00:00",
        upstream.base
    );
    let refused = upstream.get_url(&url).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["code"], "22007");
}

#[tokio::test]
async fn offsets_content_range_count_and_the_416_past_the_end() {
    let upstream = start(103, 230).await;
    let page = |offset: &'static str, count: bool| {
        let upstream = &upstream;
        async move {
            let url = upstream.url(
                ITEMS,
                &[("order", "id.desc"), ("limit", "100"), ("offset", offset)],
            );
            match count {
                true => upstream.get_with(&url, ("prefer", "count=exact")).await,
                false => upstream.get_url(&url).await,
            }
        }
    };
    let first = page("0", false).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("content-range").unwrap(), "0-99/*");
    let numbers: Vec<u64> = ids(&first.records(""), "id")
        .iter()
        .map(|i| i.parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] > w[1]), "id.desc");
    let counted = page("200", true).await;
    assert_eq!(counted.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(counted.header("content-range").unwrap(), "200-229/230");
    let end = page("230", false).await;
    assert_eq!((end.status, end.body.as_str()), (StatusCode::OK, "[]"));
    assert_eq!(end.header("content-range").unwrap(), "*/*");
    let past = page("231", false).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let error = past.json();
    assert_eq!(error["code"], "PGRST103");
    assert_eq!(
        error["details"],
        "An offset of 231 was requested, but there are only 230 rows."
    );
    // The whole table with a count is a 200.
    let all = upstream
        .get_with(&upstream.url(ITEMS, &[]), ("prefer", "count=exact"))
        .await;
    assert_eq!(
        (all.status, all.header("content-range").unwrap()),
        (StatusCode::OK, "0-229/230".to_owned())
    );
}

#[tokio::test]
async fn filters_combine_and_errors_are_postgres_codes() {
    let upstream = start(104, 60).await;
    let count = |params: &'static [(&'static str, &'static str)]| {
        let upstream = &upstream;
        async move { upstream.get(ITEMS, params).await.records("").len() }
    };
    let truth = upstream.truth("postgrest", "id").await;
    let small = truth
        .values()
        .filter(|r| parse(r)["quantity"].as_u64().unwrap() < 500)
        .count();
    assert_eq!(count(&[("quantity", "lt.500")]).await, small);
    assert_eq!(count(&[("quantity", "not.lt.500")]).await, 60 - small);
    assert_eq!(
        count(&[("or", "(quantity.lt.500,quantity.gte.500)")]).await,
        60
    );
    assert_eq!(
        count(&[("not.or", "(quantity.lt.500,quantity.gte.500)")]).await,
        0
    );
    assert_eq!(
        count(&[("id", "in.(1,2,3,4,5,6)")]).await,
        truth
            .keys()
            .filter(|k| k.len() == 1 && "123456".contains(k.as_str()))
            .count()
    );
    assert_eq!(count(&[("id", "is.null")]).await, 0);
    assert_eq!(
        count(&[("and", "(quantity.gte.0,or(id.eq.1,id.eq.\"3\"))")]).await,
        truth.keys().filter(|k| *k == "1" || *k == "3").count()
    );
    for (params, code) in [
        (&[("colour", "eq.red")][..], "42703"),
        (&[("order", "colour.asc")][..], "42703"),
        (&[("id", "eq.one")][..], "22P02"),
        (&[("id", "approx.1")][..], "PGRST100"),
        (&[("or", "(id.eq.1")][..], "PGRST100"),
        (&[("order", "id.sideways")][..], "PGRST100"),
        (&[("limit", "ten")][..], "PGRST100"),
    ] {
        let reply = upstream.get(ITEMS, params).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{params:?}");
        let body = reply.json();
        assert_eq!(body["code"], code, "{body}");
        assert!(body.get("hint").is_some() && body.get("details").is_some());
    }
}
