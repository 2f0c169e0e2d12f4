//! The position dataset, imitating Carrot quest's v2 conversations: ordered by
//! `(updated, id)`, paged from a `paginate_position=[updated, id]` JSON array, with the
//! next position in the reply's `meta`. Ids are above 2^53 and `updated` is a float with
//! six decimals, so a client that parses either as a double corrupts it: both are kept
//! as exact integers here and written as text. Soft deletes are `"deleted": true`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::churn::Dataset;
use super::{
    Clock, Sandbox, SplitMix64, World, bad_request, json_array, json_reply, parse_flag,
    parse_limit, query_pairs,
};

/// The API's page size limits.
const DEFAULT_COUNT: usize = 20;
const MAX_COUNT: usize = 50;
/// Conversation ids start where Carrot quest's do, well above 2^53.
const FIRST_ID: u64 = 1_160_406_004_324_630_614;
/// User ids are as large.
const FIRST_USER_ID: u64 = 1_160_405_971_139_084_000;
const CHANNELS: [&str; 4] = ["popup_chat", "telegram", "email", "vk"];

/// A time as the API writes it: seconds with exactly six decimals, held as integers so
/// that ordering and text never pass through a float.
#[derive(Clone, Copy)]
pub(super) struct Stamp {
    seconds: i64,
    micros: u32,
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.seconds, self.micros)
    }
}

/// A place in `(updated, id)` order, the timestamp in nanoseconds so that any incoming
/// position (up to nine decimals) compares exactly.
type Key = (i64, u32, u64);

fn key(updated: Stamp, id: u64) -> Key {
    (updated.seconds, updated.micros * 1000, id)
}

/// One conversation with its JSON text, rendered once per change.
struct Conversation {
    id: u64,
    user_id: u64,
    channel: &'static str,
    created: Stamp,
    updated: Stamp,
    parts: u64,
    unread: bool,
    deleted: bool,
    json: String,
}

impl Conversation {
    /// Re-renders the stored text by hand, so both big numbers keep their exact text.
    /// Every string in it comes from a fixed vocabulary and needs no escaping.
    fn render(&mut self) {
        self.json = format!(
            r#"{{"id":{},"user_id":{},"channel":"{}","created":{},"updated":{},"parts_count":{},"unread":{},"closed":false,"assignee":null,"deleted":{}}}"#,
            self.id,
            self.user_id,
            self.channel,
            self.created,
            self.updated,
            self.parts,
            self.unread,
            self.deleted,
        );
    }

    /// The position of this conversation, as `next_after_position` gives it.
    fn position(&self) -> String {
        format!("[{},{}]", self.updated, self.id)
    }
}

/// The position dataset, indexed by id and by `(updated, id)`.
pub(super) struct Conversations {
    rng: SplitMix64,
    by_id: BTreeMap<u64, Conversation>,
    by_position: BTreeSet<Key>,
    /// The first conversation gets exactly [`FIRST_ID`], the rest random gaps after it.
    next_id: u64,
}

impl Conversations {
    /// Applies `change` to a conversation and stamps it `at`, keeping the index in step.
    fn touch(&mut self, id: u64, at: Stamp, change: impl FnOnce(&mut Conversation)) {
        if let Some(conversation) = self.by_id.get_mut(&id) {
            self.by_position.remove(&key(conversation.updated, id));
            change(conversation);
            conversation.updated = at;
            conversation.render();
            self.by_position.insert(key(at, id));
        }
    }

    fn live_conversations(&self) -> impl Iterator<Item = &Conversation> {
        self.by_id.values().filter(|c| !c.deleted)
    }

    /// One page of the listing, as JSON text.
    fn page(&self, query: &Listing) -> String {
        let bound = |key: Key| match query.including {
            true => Bound::Included(key),
            false => Bound::Excluded(key),
        };
        let keys: Box<dyn Iterator<Item = &Key>> = match (query.direction, query.position) {
            (Direction::After, None) => Box::new(self.by_position.iter()),
            (Direction::After, Some(at)) => {
                Box::new(self.by_position.range((bound(at), Bound::Unbounded)))
            }
            (Direction::Before, None) => Box::new(self.by_position.iter().rev()),
            (Direction::Before, Some(at)) => {
                Box::new(self.by_position.range((Bound::Unbounded, bound(at))).rev())
            }
        };
        let mut page: Vec<&Conversation> = keys
            .take(query.count)
            .filter_map(|(_, _, id)| self.by_id.get(id))
            .collect();
        if let Direction::Before = query.direction {
            page.reverse();
        }
        // Positions for going on, in either direction, from a full page only.
        let full = page.len() == query.count;
        let next = |end: Option<&&Conversation>| match end {
            Some(conversation) if full => conversation.position(),
            _ => "null".to_owned(),
        };
        let (after, before) = (next(page.last()), next(page.first()));
        if let Order::Desc = query.order {
            page.reverse();
        }
        format!(
            r#"{{"data":{},"meta":{{"next_after_position":{after},"next_before_position":{before}}}}}"#,
            json_array(page.iter().map(|c| c.json.as_str())),
        )
    }
}

impl Dataset for Conversations {
    type Id = u64;
    type Stamp = Stamp;

    fn new(rng: SplitMix64) -> Self {
        Conversations {
            rng,
            by_id: BTreeMap::new(),
            by_position: BTreeSet::new(),
            next_id: FIRST_ID,
        }
    }

    fn parts(world: &mut World) -> (&mut Self, &mut Clock) {
        (&mut world.conversations, &mut world.clock)
    }

    fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    /// The API stamps microseconds.
    fn stamp(&mut self, at: DateTime<Utc>) -> Stamp {
        Stamp {
            seconds: at.timestamp(),
            micros: self.rng.below(1_000_000) as u32,
        }
    }

    /// The clock's second with six zero decimals: a valid position timestamp at or
    /// before every record the operation stamped.
    fn format_time(at: DateTime<Utc>) -> String {
        Stamp {
            seconds: at.timestamp(),
            micros: 0,
        }
        .to_string()
    }

    fn live(&self) -> Vec<u64> {
        self.live_conversations().map(|c| c.id).collect()
    }

    fn create(&mut self, at: Stamp) -> u64 {
        let id = self.next_id;
        self.next_id += 1 + self.rng.below(1000);
        let mut conversation = Conversation {
            id,
            user_id: FIRST_USER_ID + self.rng.below(1_000_000),
            channel: CHANNELS[self.rng.below(CHANNELS.len() as u64) as usize],
            created: at,
            updated: at,
            parts: 1,
            unread: true,
            deleted: false,
            json: String::new(),
        };
        conversation.render();
        self.by_position.insert(key(at, id));
        self.by_id.insert(id, conversation);
        id
    }

    /// A new message in the conversation.
    fn update(&mut self, id: u64, at: Stamp) {
        let unread = self.rng.below(2) == 0;
        self.touch(id, at, |c| {
            c.parts += 1;
            c.unread = unread;
        });
    }

    fn delete(&mut self, id: u64, at: Stamp) {
        self.touch(id, at, |c| c.deleted = true);
    }

    fn truth(&self) -> String {
        json_array(self.live_conversations().map(|c| c.json.as_str()))
    }
}

#[derive(Clone, Copy)]
enum Direction {
    After,
    Before,
}

#[derive(Clone, Copy)]
enum Order {
    Asc,
    Desc,
}

/// The listing's query, parsed by hand so every bad value gets a JSON `400`.
struct Listing {
    position: Option<Key>,
    count: usize,
    direction: Direction,
    including: bool,
    order: Order,
}

impl Listing {
    fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut listing = Listing {
            position: None,
            count: DEFAULT_COUNT,
            direction: Direction::After,
            including: false,
            order: Order::Asc,
        };
        for (key, value) in query_pairs(raw) {
            match key.as_str() {
                "paginate_position" => listing.position = Some(parse_position(&value)?),
                "paginate_count" => {
                    listing.count = parse_limit("paginate_count", &value, MAX_COUNT)?;
                }
                "paginate_direction" => {
                    listing.direction = match value.as_str() {
                        "after" => Direction::After,
                        "before" => Direction::Before,
                        _ => {
                            return Err(format!(
                                "paginate_direction must be after or before, not {value}"
                            ));
                        }
                    };
                }
                "paginate_including" => {
                    listing.including = parse_flag("paginate_including", &value)?;
                }
                "paginate_page_order" => {
                    listing.order = match value.as_str() {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        _ => {
                            return Err(format!(
                                "paginate_page_order must be asc or desc, not {value}"
                            ));
                        }
                    };
                }
                _ => {}
            }
        }
        Ok(listing)
    }
}

/// Parses `[updated, id]` exactly: the JSON array's elements are taken as their text, so
/// neither number ever becomes a float.
fn parse_position(text: &str) -> Result<Key, String> {
    let invalid = || format!("paginate_position must be a JSON array [updated, id], not {text}");
    let elements: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| invalid())?;
    let [updated, id] = elements.as_slice() else {
        return Err(invalid());
    };
    let (seconds, nanos) = parse_timestamp(updated.get().trim()).ok_or_else(invalid)?;
    let id = id.get().trim().parse::<u64>().map_err(|_| invalid())?;
    Ok((seconds, nanos, id))
}

/// A non-negative decimal with up to nine decimals, as `(seconds, nanoseconds)`.
fn parse_timestamp(text: &str) -> Option<(i64, u32)> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || fraction.len() > 9 || !digits(fraction) {
        return None;
    }
    let nanos = format!("{fraction:0<9}").parse().ok()?;
    Some((whole.parse().ok()?, nanos))
}

/// `GET /carrot/conversations`: `{"data": [...], "meta": {...}}`.
pub(super) async fn list(State(sandbox): State<Arc<Sandbox>>, RawQuery(raw): RawQuery) -> Response {
    match Listing::parse(raw.as_deref()) {
        Ok(listing) => json_reply(StatusCode::OK, sandbox.world().conversations.page(&listing)),
        Err(message) => bad_request(&message),
    }
}
