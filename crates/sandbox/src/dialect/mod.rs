//! The real-API dialects: ten upstreams imitated from their public documentation
//! (`docs/real-apis.md`; what each imitates and simplifies is in `docs/sandbox-dialects.md`
//! and in each module's doc). They share one engine: a [`Table`] of [`Record`]s (an id,
//! creation and modification times, a change number, random content) kept with the
//! indexes every listing needs, and per dialect a [`Dialect`]: how a record is rendered,
//! its id and time formats, whether a delete is soft. Paging, filters and error replies
//! are each dialect's own.
//!
//! A dialect's dataset is generated on its first use (any request, churn or truth), from
//! its own PRNG stream and relative to the clock's start, so it is the same whenever that
//! is, and a sandbox whose dialects are never used costs nothing more than before.
//!
//! Deletes are hard (the record is gone, as from an API that can only stop listing it)
//! except in Zendesk (`status: "deleted"`, still exported) and Graph (`@removed` in later
//! delta rounds), where they are soft.

mod clamp;
mod github;
mod graph;
mod hubspot;
mod jira;
mod lexer;
mod postgrest;
mod salesforce;
mod shopify;
mod shopify_orders;
mod stripe;
mod zendesk;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Serialize, Serializer};

use super::base64::URL_SAFE;
use super::churn::{self, Dataset};
use super::{Clock, Sandbox, SplitMix64, World, json_array};

/// The datasets of the dialects, each generated on first use.
pub(super) struct Dialects {
    seed: u64,
    records: usize,
    github: Option<Table<github::GitHub>>,
    shopify: Option<Table<shopify::Shopify>>,
    /// Orders and their transactions: a parent and its sub-resource.
    shopify_orders: Option<shopify_orders::Book>,
    stripe: Option<Table<stripe::Stripe>>,
    zendesk: Option<Table<zendesk::Zendesk>>,
    hubspot: Option<Table<hubspot::HubSpot>>,
    salesforce: Option<Table<salesforce::Salesforce>>,
    jira: Option<Table<jira::Jira>>,
    graph: Option<Table<graph::Graph>>,
    postgrest: Option<Table<postgrest::PostgRest>>,
    clamp: Option<Table<clamp::Clamp>>,
}

impl Dialects {
    /// `records` records per dialect, from `seed`, generated when first used.
    pub(super) fn new(seed: u64, records: usize) -> Self {
        Dialects {
            seed,
            records,
            github: None,
            shopify: None,
            shopify_orders: None,
            stripe: None,
            zendesk: None,
            hubspot: None,
            salesforce: None,
            jira: None,
            graph: None,
            postgrest: None,
            clamp: None,
        }
    }
}

/// The dialects' API routes, to be put behind the gate (log, faults, credential).
pub(super) fn api() -> Router<Arc<Sandbox>> {
    Router::new()
        .route("/github/repos/{owner}/{repo}/issues", get(github::list))
        .route(
            "/shopify/admin/api/{version}/products.json",
            get(shopify::list),
        )
        .route("/stripe/v1/customers", get(stripe::list))
        .route(
            "/zendesk/api/v2/incremental/tickets/cursor.json",
            get(zendesk::export),
        )
        .route(
            "/hubspot/crm/v3/objects/contacts/search",
            post(hubspot::search),
        )
        .route(
            "/salesforce/services/data/v59.0/query",
            get(salesforce::query),
        )
        // The next batch is named relative to the instance root; it is served both under
        // the sandbox's `/salesforce` instance and at the host's root, so that the
        // relative URL works concatenated to the instance URL and resolved against it.
        .route(
            "/salesforce/services/data/v59.0/query/{locator}",
            get(salesforce::more),
        )
        .route(
            "/services/data/v59.0/query/{locator}",
            get(salesforce::more),
        )
        .route("/jira/rest/api/3/search", get(jira::search))
        .route("/graph/v1.0/users/delta", get(graph::delta))
        .route("/postgrest/items", get(postgrest::items))
        .route("/clamp/things", get(clamp::things))
        .merge(shopify_orders::api())
}

/// The dialects' control routes: churn and truth for each, and Graph's token expiry.
pub(super) fn control() -> Router<Arc<Sandbox>> {
    Router::new()
        .merge(churn::routes::<Table<github::GitHub>>(github::GitHub::NAME))
        .merge(churn::routes::<Table<shopify::Shopify>>(
            shopify::Shopify::NAME,
        ))
        .merge(churn::routes::<Table<stripe::Stripe>>(stripe::Stripe::NAME))
        .merge(churn::routes::<Table<zendesk::Zendesk>>(
            zendesk::Zendesk::NAME,
        ))
        .merge(churn::routes::<Table<hubspot::HubSpot>>(
            hubspot::HubSpot::NAME,
        ))
        .merge(churn::routes::<Table<salesforce::Salesforce>>(
            salesforce::Salesforce::NAME,
        ))
        .merge(churn::routes::<Table<jira::Jira>>(jira::Jira::NAME))
        .merge(churn::routes::<Table<graph::Graph>>(graph::Graph::NAME))
        .merge(churn::routes::<Table<postgrest::PostgRest>>(
            postgrest::PostgRest::NAME,
        ))
        .merge(churn::routes::<Table<clamp::Clamp>>(clamp::Clamp::NAME))
        .route("/_control/graph/expire_tokens", post(graph::expire_tokens))
        .merge(shopify_orders::control())
}

/// How a dialect writes ids.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum IdStyle {
    /// A JSON number.
    Number,
    /// A number in a JSON string (`"512"`).
    Text,
    /// `cus_` and eleven base-62 characters that do not follow creation order.
    Stripe,
    /// An 18-character Salesforce id of an Account (`0015g…`), in creation order.
    Salesforce,
    /// A GUID, as directory objects have.
    Guid,
}

impl IdStyle {
    fn text(self, n: u64) -> String {
        match self {
            IdStyle::Number | IdStyle::Text => n.to_string(),
            IdStyle::Stripe => format!("cus_{}", base62(stripe_scramble(n), 11)),
            IdStyle::Salesforce => salesforce_id("0015g", n),
            IdStyle::Guid => {
                let (a, b) = (mix(n), mix(!n));
                format!(
                    "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                    a >> 32,
                    (a >> 16) & 0xffff,
                    a & 0xfff,
                    0x8000 | ((b >> 48) & 0x3fff),
                    b & 0xffff_ffff_ffff,
                )
            }
        }
    }
}

/// A record's id as churn replies show it: written as the API writes it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RecordId {
    n: u64,
    style: IdStyle,
}

impl Serialize for RecordId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.style {
            IdStyle::Number => serializer.serialize_u64(self.n),
            style => serializer.collect_str(&style.text(self.n)),
        }
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` in `width` base-62 digits (ASCII order, so text order is number order).
fn base62(mut n: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// The number of a base-62 text, `None` for any other text.
fn unbase62(text: &str) -> Option<u64> {
    text.bytes().try_fold(0u64, |n, c| {
        let digit = BASE62.iter().position(|&d| d == c)? as u64;
        n.checked_mul(62)?.checked_add(digit)
    })
}

/// Stripe ids look random: the number's bits reversed and flipped by a constant (its
/// own inverse, so the id can be read back).
fn stripe_scramble(n: u64) -> u64 {
    (n ^ 0x5DEE_CE66_D1CE_4E5B).reverse_bits()
}

/// The number in a Stripe-style id written by [`IdStyle::text`].
fn stripe_number(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("cus_").filter(|d| d.len() == 11)?;
    let scrambled = unbase62(digits)?;
    Some(scrambled.reverse_bits() ^ 0x5DEE_CE66_D1CE_4E5B)
}

/// An 18-character Salesforce id: a 5-character prefix, the number in 10 base-62 digits
/// and the documented 3-character case checksum, so that it reads like a real one.
fn salesforce_id(prefix: &str, n: u64) -> String {
    let id15 = format!("{prefix}{}", base62(n, 10));
    let mut suffix = String::with_capacity(3);
    for chunk in id15.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_ascii_uppercase())
            .fold(0usize, |bits, (i, _)| bits | 1 << i);
        suffix.push(char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]));
    }
    id15 + &suffix
}

/// The SplitMix64 finalizer: a bijection that spreads a number's bits.
fn mix(n: u64) -> u64 {
    SplitMix64(n).next_u64()
}

/// The resolution of a dialect's modification times.
#[derive(Clone, Copy)]
pub(super) enum Precision {
    Seconds,
    Millis,
    Micros,
}

/// What one dialect is: its dataset's shape and how it renders a record.
pub(super) trait Dialect: Sized + 'static {
    /// Its name in `/_control/{NAME}/...`.
    const NAME: &'static str;
    /// Its dataset's PRNG stream (the seed styles use 0 to 5).
    const STREAM: u64;
    /// The first id, and the largest gap between consecutive ids.
    const FIRST_ID: u64;
    const ID_GAP: u64;
    const ID: IdStyle;
    const PRECISION: Precision;
    /// A soft delete keeps the record, marked deleted, at a new change; a hard one
    /// removes it.
    const SOFT_DELETE: bool;
    /// Whatever else the dialect keeps (cursors, token epochs).
    type State: Default;

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>>;
    /// A time as its records show it (also in churn replies).
    fn format_time(at: DateTime<Utc>) -> String;
    /// A record as the API serves it (and truth shows it).
    fn render(record: &Record) -> String;
}

/// One record of any dialect.
pub(super) struct Record {
    n: u64,
    /// 1 for the first record created, and so on (issue numbers, keys).
    ordinal: u64,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    /// The table's change counter when it last changed.
    seq: u64,
    /// 1 when created, one more per update.
    revision: u64,
    /// Random content of this revision: every field a dialect shows derives from it.
    draw: u64,
    deleted: bool,
    json: String,
}

impl Record {
    /// One of `choices`, fixed for this revision; `salt` tells the fields apart.
    fn pick<'a>(&self, salt: u64, choices: &[&'a str]) -> &'a str {
        choices[(self.figure(salt, choices.len() as u64)) as usize]
    }

    /// A number in `0..below`, fixed for this revision.
    fn figure(&self, salt: u64, below: u64) -> u64 {
        mix(self.draw ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .checked_rem(below)
            .unwrap_or(0)
    }

    /// The id's text as the dialect writes it.
    fn id<D: Dialect>(&self) -> String {
        D::ID.text(self.n)
    }
}

/// One dialect's records, with the indexes its listings read.
pub(super) struct Table<D: Dialect> {
    rng: SplitMix64,
    records: BTreeMap<u64, Record>,
    by_updated: BTreeSet<(DateTime<Utc>, u64)>,
    by_created: BTreeSet<(DateTime<Utc>, u64)>,
    by_seq: BTreeMap<u64, u64>,
    /// Hard-deleted ids with their creation time, so that a cursor naming one still has
    /// a place in a creation-ordered listing.
    removed: BTreeMap<u64, DateTime<Utc>>,
    last_id: u64,
    last_seq: u64,
    created_count: u64,
    state: D::State,
}

impl<D: Dialect> Table<D> {
    /// Gives a record a new change number and time, and new content unless it is being
    /// deleted, keeping the indexes in step.
    fn touch(&mut self, n: u64, at: DateTime<Utc>, delete: bool) {
        let draw = self.rng.next_u64();
        let Some(record) = self.records.get_mut(&n) else {
            return;
        };
        self.by_updated.remove(&(record.updated, n));
        self.by_seq.remove(&record.seq);
        self.last_seq += 1;
        record.seq = self.last_seq;
        record.updated = at;
        if delete {
            record.deleted = true;
        } else {
            record.revision += 1;
            record.draw = draw;
        }
        record.json = D::render(record);
        self.by_updated.insert((at, n));
        self.by_seq.insert(record.seq, n);
    }

    fn live_records(&self) -> impl Iterator<Item = &Record> {
        self.records.values().filter(|r| !r.deleted)
    }

    /// Records in `(updated, id)` order from `from` on.
    fn updated_from(
        &self,
        from: std::ops::Bound<(DateTime<Utc>, u64)>,
    ) -> impl DoubleEndedIterator<Item = &Record> {
        self.by_updated
            .range((from, std::ops::Bound::Unbounded))
            .filter_map(|(_, n)| self.records.get(n))
    }
}

impl<D: Dialect> Dataset for Table<D> {
    type Id = RecordId;
    type Stamp = DateTime<Utc>;

    fn new(rng: SplitMix64) -> Self {
        Table {
            rng,
            records: BTreeMap::new(),
            by_updated: BTreeSet::new(),
            by_created: BTreeSet::new(),
            by_seq: BTreeMap::new(),
            removed: BTreeMap::new(),
            last_id: D::FIRST_ID.saturating_sub(1),
            last_seq: 0,
            created_count: 0,
            state: D::State::default(),
        }
    }

    /// Generates the dataset on first use, relative to the clock's start (not to now),
    /// so that it does not depend on when that is.
    fn parts(world: &mut World) -> (&mut Self, &mut Clock) {
        let dialects = &mut world.dialects;
        let (seed, records) = (dialects.seed, dialects.records);
        let table = D::slot(dialects).get_or_insert_with(|| {
            churn::generate(
                SplitMix64::stream(seed, D::STREAM),
                records,
                &Clock::start(),
            )
        });
        (table, &mut world.clock)
    }

    fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    fn stamp(&mut self, at: DateTime<Utc>) -> DateTime<Utc> {
        let noise = match D::PRECISION {
            Precision::Seconds => TimeDelta::zero(),
            Precision::Millis => TimeDelta::milliseconds(self.rng.below(1000) as i64),
            Precision::Micros => TimeDelta::microseconds(self.rng.below(1_000_000) as i64),
        };
        at + noise
    }

    fn format_time(at: DateTime<Utc>) -> String {
        D::format_time(at)
    }

    fn live(&self) -> Vec<RecordId> {
        self.live_records()
            .map(|r| RecordId {
                n: r.n,
                style: D::ID,
            })
            .collect()
    }

    fn create(&mut self, at: DateTime<Utc>) -> RecordId {
        self.last_id += 1 + self.rng.below(D::ID_GAP);
        self.last_seq += 1;
        self.created_count += 1;
        let n = self.last_id;
        let mut record = Record {
            n,
            ordinal: self.created_count,
            created: at,
            updated: at,
            seq: self.last_seq,
            revision: 1,
            draw: self.rng.next_u64(),
            deleted: false,
            json: String::new(),
        };
        record.json = D::render(&record);
        self.by_updated.insert((at, n));
        self.by_created.insert((at, n));
        self.by_seq.insert(record.seq, n);
        self.records.insert(n, record);
        RecordId { n, style: D::ID }
    }

    fn update(&mut self, id: RecordId, at: DateTime<Utc>) {
        self.touch(id.n, at, false);
    }

    fn delete(&mut self, id: RecordId, at: DateTime<Utc>) {
        if D::SOFT_DELETE {
            self.touch(id.n, at, true);
        } else if let Some(record) = self.records.remove(&id.n) {
            self.by_updated.remove(&(record.updated, id.n));
            self.by_created.remove(&(record.created, id.n));
            self.by_seq.remove(&record.seq);
            self.removed.insert(id.n, record.created);
        }
    }

    fn truth(&self) -> String {
        json_array(self.live_records().map(|r| r.json.as_str()))
    }
}

/// Runs `read` on dialect `D`'s table (generated on first use) with the sandbox clock,
/// under the lock.
fn with_table<D: Dialect, R>(
    sandbox: &Sandbox,
    read: impl FnOnce(&mut Table<D>, DateTime<Utc>) -> R,
) -> R {
    let mut world = sandbox.world();
    let (table, clock) = Table::<D>::parts(&mut world);
    let now = clock.now();
    read(table, now)
}

/// An opaque cursor: `text` in URL-safe base64, so it needs no escaping in a URL.
fn opaque(text: &str) -> String {
    URL_SAFE.encode(text.as_bytes())
}

/// The text inside an [`opaque`] cursor, `None` for anything else.
fn unopaque(token: &str) -> Option<String> {
    String::from_utf8(URL_SAFE.decode(token)?).ok()
}

/// A JSON reply with its own status (dialects have their own error shapes).
fn reply(status: StatusCode, body: String) -> Response {
    super::json_reply(status, body)
}

/// A reply with one more header; a value that is not a valid header is left out (all of
/// them are built from ASCII here).
fn with_header(mut response: Response, name: header::HeaderName, value: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// An RFC 8288 `Link` header value of `(url, rel)` pairs.
fn link_header(links: &[(String, &str)]) -> String {
    links
        .iter()
        .map(|(url, rel)| format!("<{url}>; rel=\"{rel}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A query string of `pairs`, form-encoded.
fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Orders two records by sort `keys` (`(key, descending)`, the first that differs
/// decides; `Equal` when none does), `compare` saying how one key orders them.
fn by_keys<K: Copy>(
    keys: &[(K, bool)],
    a: &Record,
    b: &Record,
    compare: impl Fn(K, &Record, &Record) -> Ordering,
) -> Ordering {
    keys.iter()
        .map(|&(key, descending)| {
            let ordering = compare(key, a, b);
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// An RFC 3339 time (any offset), in UTC.
fn rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Vocabularies the records' content is drawn from.
const FIRST_NAMES: [&str; 12] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia", "Linus",
    "Frances", "Tim",
];
const LAST_NAMES: [&str; 12] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson",
    "Perlman", "Torvalds", "Allen", "Lee",
];
const WORDS: [&str; 16] = [
    "sync", "cursor", "page", "token", "mirror", "feed", "batch", "delta", "index", "ledger",
    "stream", "shard", "queue", "cache", "replica", "schema",
];
const TROUBLES: [&str; 8] = [
    "stale",
    "missing",
    "duplicate",
    "slow",
    "broken",
    "flaky",
    "late",
    "partial",
];

/// A short title: "<trouble> <word> in <word>".
fn title(record: &Record) -> String {
    format!(
        "{} {} in {}",
        record.pick(1, &TROUBLES),
        record.pick(2, &WORDS),
        record.pick(3, &WORDS)
    )
}

/// A person's `(first, last)` name.
fn person(record: &Record) -> (&'static str, &'static str) {
    (record.pick(4, &FIRST_NAMES), record.pick(5, &LAST_NAMES))
}

/// An e-mail address unique to the record.
fn email(record: &Record) -> String {
    let (first, last) = person(record);
    format!(
        "{}.{}.{}@example.com",
        first.to_ascii_lowercase(),
        last.to_ascii_lowercase(),
        record.ordinal
    )
}
