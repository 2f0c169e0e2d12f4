//! Salesforce SOQL query: `nextRecordsUrl` batches until `done`, `SystemModstamp`
//! filters, query locators as snapshots, Salesforce's error shape.

use super::*;

const QUERY: &str = "/salesforce/services/data/v59.0/query";
const TRUTH_SOQL: &str =
    "SELECT Id, Name, Industry, CreatedDate, LastModifiedDate, SystemModstamp FROM Account";

async fn query(upstream: &Upstream, soql: &str, batch: Option<&str>) -> Reply {
    let url = upstream.url(QUERY, &[("q", soql)]);
    match batch {
        Some(options) => {
            upstream
                .get_with(&url, ("sforce-query-options", options))
                .await
        }
        None => upstream.get_url(&url).await,
    }
}

/// Runs `soql`, then fetches `nextRecordsUrl` (against `instance`: the host root or the
/// `/salesforce` instance) until `done`; returns every batch.
async fn walk(upstream: &Upstream, soql: &str, batch: Option<&str>, instance: &str) -> Vec<Reply> {
    let mut reply = query(upstream, soql, batch).await;
    let mut batches = Vec::new();
    for _ in 0..MAX_PAGES {
        let body = reply.ok();
        let done = body["done"].as_bool().unwrap();
        let next = body
            .get("nextRecordsUrl")
            .map(|u| u.as_str().unwrap().to_owned());
        batches.push(reply);
        if done {
            assert_eq!(next, None);
            return batches;
        }
        let next = next.unwrap();
        let url = format!("{}{instance}{next}", upstream.base);
        reply = match batch {
            Some(options) => {
                upstream
                    .get_with(&url, ("sforce-query-options", options))
                    .await
            }
            None => upstream.get_url(&url).await,
        };
    }
    panic!("the query was not done within {MAX_PAGES} batches");
}

#[tokio::test]
async fn batches_follow_next_records_url_until_done_and_return_the_truth() {
    let upstream = start(71, 450).await;
    for instance in ["", "/salesforce"] {
        let batches = walk(&upstream, TRUTH_SOQL, Some("batchSize=200"), instance).await;
        let sizes: Vec<usize> = batches.iter().map(|b| b.records("records").len()).collect();
        assert_eq!(sizes, [200, 200, 50]);
        assert!(batches.iter().all(|b| b.json()["totalSize"] == 450));
        let next = batches[0].json()["nextRecordsUrl"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            next.starts_with("/services/data/v59.0/query/01g") && next.ends_with("-200"),
            "{next}"
        );
        let records: Vec<String> = batches.iter().flat_map(|b| b.records("records")).collect();
        assert_eq!(
            mirror(records, "Id"),
            upstream.truth("salesforce", "Id").await
        );
    }
    // 2,000 a batch by default; a batch size below 200 is raised to it.
    let whole = query(&upstream, TRUTH_SOQL, None).await.ok();
    assert_eq!(
        (
            whole["done"].as_bool(),
            whole["records"].as_array().unwrap().len()
        ),
        (Some(true), 450)
    );
    let small = query(&upstream, TRUTH_SOQL, Some("batchSize=10")).await;
    assert_eq!(small.records("records").len(), 200);
    let usage = small.header("sforce-limit-info").unwrap();
    assert!(
        usage.starts_with("api-usage=") && usage.ends_with("/15000"),
        "{usage}"
    );
}

#[tokio::test]
async fn system_modstamp_filters_are_exclusive_or_inclusive_as_written() {
    let upstream = start(72, 40).await;
    let (touched, at) = upstream.churn("salesforce/mass_update", 3).await;
    assert!(at.ends_with(".000+0000"), "{at}");
    let literal = chrono::DateTime::parse_from_str(&at, "%Y-%m-%dT%H:%M:%S%.3f%z")
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let ids_of = |soql: String| {
        let upstream = &upstream;
        async move { ids(&query(upstream, &soql, None).await.records("records"), "Id") }
    };
    let select = "SELECT Id, SystemModstamp FROM Account";
    assert_eq!(
        ids_of(format!(
            "{select} WHERE SystemModstamp >= {literal} ORDER BY SystemModstamp, Id"
        ))
        .await,
        touched
    );
    assert!(
        ids_of(format!("{select} WHERE SystemModstamp > {literal}"))
            .await
            .is_empty()
    );
    assert_eq!(
        ids_of(format!("{select} WHERE SystemModstamp < {literal}"))
            .await
            .len(),
        37
    );
    // An offset names the same instant; keywords and fields are case-insensitive.
    let plus_two = chrono::DateTime::parse_from_rfc3339(&literal)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap())
        .to_rfc3339();
    assert_eq!(
        ids_of(format!(
            "select id from account where systemmodstamp >= {plus_two} order by id"
        ))
        .await,
        touched
    );
    // Selected fields come in SELECT order, after the attributes.
    let one = query(
        &upstream,
        &format!("SELECT SystemModstamp, Id FROM Account WHERE SystemModstamp = {literal} LIMIT 1"),
        None,
    )
    .await;
    let record = &one.records("records")[0];
    assert!(
        record.starts_with(
            r#"{"attributes":{"type":"Account","url":"/services/data/v59.0/sobjects/Account/"#
        ),
        "{record}"
    );
    assert!(
        record.contains(&format!(r#""SystemModstamp":"{at}","Id":""#)),
        "{record}"
    );
    assert_eq!(one.json()["totalSize"], 1);
    // Descending, then by Id.
    let newest = ids_of(format!("{select} ORDER BY SystemModstamp DESC LIMIT 3")).await;
    assert_eq!(newest, touched);
}

#[tokio::test]
async fn a_query_locator_is_a_snapshot_that_lives_two_days() {
    let upstream = start(73, 450).await;
    let first = query(&upstream, TRUTH_SOQL, Some("batchSize=200"))
        .await
        .ok();
    let next = first["nextRecordsUrl"].as_str().unwrap().to_owned();
    let snapshot = upstream.get_url(&format!("{}{next}", upstream.base)).await;
    upstream.churn("salesforce/update", 100).await;
    upstream.churn("salesforce/delete", 50).await;
    let later = upstream.get_url(&format!("{}{next}", upstream.base)).await;
    assert_eq!(
        later.body, snapshot.body,
        "the locator's results were fixed at query time"
    );
    assert_eq!(later.json()["totalSize"], 450);
    let fresh = query(&upstream, TRUTH_SOQL, None).await.ok();
    assert_eq!(fresh["totalSize"], 400);

    // Since v56.0 there is no limit on open locators (there were ten a user)...
    for _ in 0..12 {
        query(&upstream, TRUTH_SOQL, Some("batchSize=200"))
            .await
            .ok();
    }
    let still = upstream.get_url(&format!("{}{next}", upstream.base)).await;
    assert_eq!(still.body, snapshot.body);
    // ...but each lives two days (the first was opened 150 churned seconds ago).
    let newest = query(&upstream, TRUTH_SOQL, Some("batchSize=200"))
        .await
        .ok();
    let newest = format!(
        "{}{}",
        upstream.base,
        newest["nextRecordsUrl"].as_str().unwrap()
    );
    upstream.tick(2 * 24 * 3600).await;
    assert_eq!(upstream.get_url(&newest).await.status, StatusCode::OK);
    let expired = upstream.get_url(&format!("{}{next}", upstream.base)).await;
    assert_eq!(expired.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        expired.json(),
        json!([{ "message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR" }])
    );
    upstream.tick(1).await;
    assert_eq!(
        upstream.get_url(&newest).await.status,
        StatusCode::BAD_REQUEST
    );
    let unknown = format!(
        "{}/services/data/v59.0/query/01gD000000000ZZZAA-200",
        upstream.base
    );
    assert_eq!(
        upstream.get_url(&unknown).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn unsupported_soql_gets_salesforces_error_codes() {
    let upstream = start(74, 5).await;
    let cases = [
        (
            "SELECT Id FROM Account WHERE SystemModstamp > 2017-09-04T00:00:00Z OR Id = 'x'",
            "MALFORMED_QUERY",
        ),
        (
            "SELECT Id FROM Account WHERE (SystemModstamp > 2017-09-04T00:00:00Z)",
            "MALFORMED_QUERY",
        ),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > TODAY",
            "MALFORMED_QUERY",
        ),
        ("SELECT Id, Id FROM Account", "MALFORMED_QUERY"),
        ("SELECT Id FROM", "MALFORMED_QUERY"),
        ("DELETE FROM Account", "MALFORMED_QUERY"),
        ("SELECT Id, Revenue__c FROM Account", "INVALID_FIELD"),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > '2017-09-04T00:00:00Z'",
            "INVALID_FIELD",
        ),
        ("SELECT Id FROM Contact", "INVALID_TYPE"),
    ];
    for (soql, code) in cases {
        let reply = query(&upstream, soql, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{soql}");
        let body = reply.json();
        assert_eq!(body[0]["errorCode"], code, "{soql}: {body}");
        assert!(body[0]["message"].is_string());
    }
    let missing = upstream.get(QUERY, &[]).await;
    assert_eq!(missing.json()[0]["errorCode"], "MALFORMED_QUERY");
    // A '+' sent unescaped is a space: the literal ends there.
    let url = format!(
        "{}{QUERY}?q=SELECT+Id+FROM+Account+WHERE+SystemModstamp+>+2017-09-04T00:00:00+03:00",
        upstream.base
    );
    assert_eq!(upstream.get_url(&url).await.status, StatusCode::BAD_REQUEST);
}
