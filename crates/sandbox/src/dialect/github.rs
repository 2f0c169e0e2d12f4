//! GitHub's `GET /repos/{owner}/{repo}/issues` (real-apis.md §1), at
//! `/github/repos/tidemark/sandbox/issues` (the one repository; any other is a 404).
//!
//! Imitated: `state` (`open` by default, `closed`, `all`), `sort` (`created` by default,
//! `updated`, `comments`), `direction` (`desc` by default), `since` (an ISO 8601 time,
//! on the updated time), `per_page` (default 30, silently at most 100) and `page` (from
//! 1); a bare JSON array of issues (every fourth one a pull request, with its
//! `pull_request` key); `Link` with `rel="prev"`, `"next"`, `"last"` and `"first"` where
//! they apply, each the request's own URL with another `page`. Pages are offsets into
//! the sorted listing, so rows shift under a reader as issues change. A page past the
//! end is an empty array. Bad values of `state`, `sort`, `direction` or `since` are a
//! `422 Validation Failed`.
//!
//! Simplified: `since` is inclusive ("at or after", as the old v3 docs said; today's
//! behaviour is not confirmed); ties in the sort key are broken by id (GitHub gives no
//! tie-breaker); an invalid `per_page` or `page` is its default; no labels, milestones,
//! assignees or reactions; deletes are hard (GitHub lists no deleted issues);
//! `Link` URLs keep the request's path (GitHub rewrites them to `/repositories/{id}/…`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::{
    Dialect, Dialects, IdStyle, Precision, Record, Table, base62, link_header, query_string, reply,
    rfc3339, title, with_header, with_table,
};
use crate::{Origin, Sandbox, json_array, query_pairs};

const OWNER: &str = "tidemark";
const REPO: &str = "sandbox";
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
const DOCS: &str = "https://docs.github.com/rest/issues/issues#list-repository-issues";
const LOGINS: [&str; 6] = [
    "octocat", "hubot", "monalisa", "defunkt", "mojombo", "pjhyett",
];

pub(super) struct GitHub;

impl Dialect for GitHub {
    const NAME: &'static str = "github";
    const STREAM: u64 = 6;
    const FIRST_ID: u64 = 1_800_000_000;
    const ID_GAP: u64 = 5000;
    const ID: IdStyle = IdStyle::Number;
    const PRECISION: Precision = Precision::Seconds;
    const SOFT_DELETE: bool = false;
    type State = ();

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.github
    }

    /// `2011-04-22T13:33:48Z`.
    fn format_time(at: DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn render(record: &Record) -> String {
        let number = record.ordinal;
        let api = format!("https://api.github.com/repos/{OWNER}/{REPO}");
        let pull = record.ordinal.is_multiple_of(4);
        let kind = if pull { "pull" } else { "issues" };
        let closed = is_closed(record);
        let login = record.pick(8, &LOGINS);
        let mut issue = serde_json::json!({
            "url": format!("{api}/issues/{number}"),
            "repository_url": api,
            "html_url": format!("https://github.com/{OWNER}/{REPO}/{kind}/{number}"),
            "id": record.n,
            "node_id": format!("I_kwDO{}", base62(record.n, 8)),
            "number": number,
            "title": title(record),
            "user": { "login": login, "id": 583_231 + record.figure(8, 6), "type": "User" },
            "state": if closed { "closed" } else { "open" },
            "locked": false,
            "comments": comments(record),
            "created_at": Self::format_time(record.created),
            "updated_at": Self::format_time(record.updated),
            "closed_at": closed.then(|| Self::format_time(record.updated)),
            "author_association": "CONTRIBUTOR",
            "body": format!("Seen in revision {} of the sandbox.", record.revision),
        });
        if pull {
            issue["pull_request"] = serde_json::json!({
                "url": format!("{api}/pulls/{number}"),
                "html_url": format!("https://github.com/{OWNER}/{REPO}/pull/{number}"),
                "merged_at": null,
            });
        }
        issue.to_string()
    }
}

fn is_closed(record: &Record) -> bool {
    record.figure(6, 3) == 0
}

fn comments(record: &Record) -> u64 {
    record.figure(7, 12)
}

/// A GitHub error reply: `{"message", "documentation_url", "status"}`.
fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let mut body = serde_json::json!({
        "message": message,
        "documentation_url": DOCS,
        "status": status.as_u16().to_string(),
    });
    if let Some(field) = field {
        body["errors"] =
            serde_json::json!([{ "resource": "Issue", "field": field, "code": "invalid" }]);
    }
    reply(status, body.to_string())
}

#[derive(Clone, Copy, PartialEq)]
enum Filter {
    Open,
    Closed,
    All,
}

#[derive(Clone, Copy)]
enum Sort {
    Created,
    Updated,
    Comments,
}

struct Listing {
    state: Filter,
    sort: Sort,
    descending: bool,
    since: Option<DateTime<Utc>>,
    per_page: usize,
    page: usize,
}

impl Listing {
    /// The query; `Err` names the field of a `422`.
    fn parse(pairs: &[(String, String)]) -> Result<Self, &'static str> {
        let mut listing = Listing {
            state: Filter::Open,
            sort: Sort::Created,
            descending: true,
            since: None,
            per_page: DEFAULT_PER_PAGE,
            page: 1,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "state" => {
                    listing.state = match value.as_str() {
                        "open" => Filter::Open,
                        "closed" => Filter::Closed,
                        "all" => Filter::All,
                        _ => return Err("state"),
                    }
                }
                "sort" => {
                    listing.sort = match value.as_str() {
                        "created" => Sort::Created,
                        "updated" => Sort::Updated,
                        "comments" => Sort::Comments,
                        _ => return Err("sort"),
                    }
                }
                "direction" => {
                    listing.descending = match value.as_str() {
                        "asc" => false,
                        "desc" => true,
                        _ => return Err("direction"),
                    }
                }
                "since" => listing.since = Some(parse_since(value).ok_or("since")?),
                "per_page" => {
                    listing.per_page = match value.parse::<usize>() {
                        Ok(0) | Err(_) => DEFAULT_PER_PAGE,
                        Ok(n) => n.min(MAX_PER_PAGE),
                    }
                }
                "page" => listing.page = value.parse::<usize>().unwrap_or(1).max(1),
                _ => {}
            }
        }
        Ok(listing)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (any RFC 3339 time) or a date, meaning its midnight UTC.
fn parse_since(text: &str) -> Option<DateTime<Utc>> {
    rfc3339(text).or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
    })
}

/// One page of the sorted, filtered listing, with the number of the last page.
fn page(table: &Table<GitHub>, listing: &Listing) -> (String, usize) {
    let mut issues: Vec<&Record> = table
        .live_records()
        .filter(|r| match listing.state {
            Filter::All => true,
            Filter::Closed => is_closed(r),
            Filter::Open => !is_closed(r),
        })
        .filter(|r| listing.since.is_none_or(|since| r.updated >= since))
        .collect();
    match listing.sort {
        Sort::Created => issues.sort_by_key(|r| (r.created, r.n)),
        Sort::Updated => issues.sort_by_key(|r| (r.updated, r.n)),
        Sort::Comments => issues.sort_by_key(|r| (comments(r), r.n)),
    }
    if listing.descending {
        issues.reverse();
    }
    let last = issues.len().div_ceil(listing.per_page).max(1);
    let body = json_array(
        issues
            .iter()
            .skip((listing.page - 1).saturating_mul(listing.per_page))
            .take(listing.per_page)
            .map(|r| r.json.as_str()),
    );
    (body, last)
}

/// `GET /github/repos/{owner}/{repo}/issues`.
pub(super) async fn list(
    State(sandbox): State<Arc<Sandbox>>,
    Path((owner, repo)): Path<(String, String)>,
    Origin(origin): Origin,
    RawQuery(raw): RawQuery,
) -> Response {
    if owner != OWNER || repo != REPO {
        return error(StatusCode::NOT_FOUND, "Not Found", None);
    }
    let pairs: Vec<(String, String)> = query_pairs(raw.as_deref()).collect();
    let listing = match Listing::parse(&pairs) {
        Ok(listing) => listing,
        Err(field) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation Failed",
                Some(field),
            );
        }
    };
    let (body, last) = with_table::<GitHub, _>(&sandbox, |table, _| page(table, &listing));
    let url = |page: usize| {
        let page = page.to_string();
        let query = query_string(
            pairs
                .iter()
                .filter(|(key, _)| key != "page")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain([("page", page.as_str())]),
        );
        format!("{origin}/github/repos/{OWNER}/{REPO}/issues?{query}")
    };
    let current = listing.page;
    let mut links = Vec::new();
    if current > 1 {
        links.push((url((current - 1).min(last)), "prev"));
    }
    if current < last {
        links.push((url(current + 1), "next"));
        links.push((url(last), "last"));
    }
    if current > 1 {
        links.push((url(1), "first"));
    }
    let response = reply(StatusCode::OK, body);
    match links.is_empty() {
        true => response,
        false => with_header(response, header::LINK, &link_header(&links)),
    }
}
