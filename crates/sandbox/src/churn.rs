//! Churn: the control operations every dataset shares (create, update, soft delete, mass
//! update, truth), written once over [`Dataset`] so that each style only says what a
//! change means for its records.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{Clock, JsonBody, Sandbox, SplitMix64, World, bad_request, json_reply};

/// Bounds one `create` call so a typo cannot exhaust memory.
const MAX_CREATE: usize = 100_000;

/// One style's records, with the PRNG that drives their content and churn.
pub(super) trait Dataset: Sized + 'static {
    /// A record's id, as churn replies show it.
    type Id: Copy + Ord + Serialize;
    /// A modification time at the upstream's resolution.
    type Stamp: Copy;

    /// An empty dataset drawing from `rng`.
    fn new(rng: SplitMix64) -> Self;
    /// This dataset in `world`, with the clock its changes are stamped from.
    fn parts(world: &mut World) -> (&mut Self, &mut Clock);
    fn rng(&mut self) -> &mut SplitMix64;
    /// The stamp of a change made at `at` (some upstreams add sub-second noise).
    fn stamp(&mut self, at: DateTime<Utc>) -> Self::Stamp;
    /// The sandbox clock as the upstream writes times, for churn replies.
    fn format_time(at: DateTime<Utc>) -> String;
    /// The ids of the live (not deleted) records, in id order.
    fn live(&self) -> Vec<Self::Id>;
    fn create(&mut self, at: Self::Stamp) -> Self::Id;
    /// An ordinary edit of the record's content.
    fn update(&mut self, id: Self::Id, at: Self::Stamp);
    /// A soft delete: the record stays, marked deleted, with a new modification time.
    fn delete(&mut self, id: Self::Id, at: Self::Stamp);
    /// Every live record exactly as the API serves it, by id, as one JSON array.
    fn truth(&self) -> String;

    /// Up to `n` distinct live ids, chosen at random.
    fn pick(&mut self, n: usize) -> Vec<Self::Id> {
        let live = self.live();
        pick(live, n, self.rng())
    }
}

/// `records` live records updated at random seconds before the clock's start, so many
/// share a second and time order differs from id order.
pub(super) fn generate<D: Dataset>(rng: SplitMix64, records: usize, clock: &Clock) -> D {
    let mut data = D::new(rng);
    for _ in 0..records {
        let back = 1 + data.rng().below(records as u64) as i64;
        let stamp = data.stamp(clock.now() - TimeDelta::seconds(back));
        data.create(stamp);
    }
    data
}

/// `/_control/{style}/create`, `update`, `delete`, `mass_update` and `truth`.
pub(super) fn routes<D: Dataset>(style: &str) -> Router<Arc<Sandbox>> {
    let path = |operation: &str| format!("/_control/{style}/{operation}");
    Router::new()
        .route(&path("create"), post(create::<D>))
        .route(&path("update"), post(update::<D>))
        .route(&path("delete"), post(delete::<D>))
        .route(&path("mass_update"), post(mass_update::<D>))
        .route(&path("truth"), get(truth::<D>))
}

/// The body of every churn operation.
#[derive(Deserialize)]
pub(super) struct Count {
    pub(super) count: usize,
}

/// `POST /_control/S/create`: `count` new records, each in its own second.
async fn create<D: Dataset>(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn::<D>(&sandbox, |data, clock| {
        if body.count > MAX_CREATE {
            return Err(format!("count must be at most {MAX_CREATE}"));
        }
        let mut ids = Vec::with_capacity(body.count);
        for _ in 0..body.count {
            let stamp = data.stamp(clock.now());
            ids.push(data.create(stamp));
            clock.advance(1);
        }
        Ok(ids)
    })
}

/// `POST /_control/S/update`: edits `count` random live records, each in its own second
/// (the clock steps one second after each), like ordinary edits.
async fn update<D: Dataset>(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn::<D>(&sandbox, |data, clock| {
        let ids = data.pick(body.count);
        for &id in &ids {
            let stamp = data.stamp(clock.now());
            data.update(id, stamp);
            clock.advance(1);
        }
        Ok(ids)
    })
}

/// `POST /_control/S/delete` (and `/_control/keyset/archive`): soft-deletes `count`
/// random live records, each in its own second.
pub(super) async fn delete<D: Dataset>(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn::<D>(&sandbox, |data, clock| {
        let ids = data.pick(body.count);
        for &id in &ids {
            let stamp = data.stamp(clock.now());
            data.delete(id, stamp);
            clock.advance(1);
        }
        Ok(ids)
    })
}

/// `POST /_control/S/mass_update`: `count` random live records all get ONE shared
/// modification time (a bulk price change), the case that breaks since-only paging.
async fn mass_update<D: Dataset>(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn::<D>(&sandbox, |data, clock| {
        let ids = data.pick(body.count);
        let stamp = data.stamp(clock.now());
        for &id in &ids {
            data.update(id, stamp);
        }
        clock.advance(1);
        Ok(ids)
    })
}

/// `GET /_control/S/truth`: what a faithful mirror must hold.
async fn truth<D: Dataset>(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let mut world = sandbox.world();
    let (data, _) = D::parts(&mut world);
    json_reply(StatusCode::OK, data.truth())
}

/// Runs one churn operation under the lock and replies with the ids it touched (sorted),
/// the time they were stamped from and the clock after it, in the upstream's format.
pub(super) fn churn<D: Dataset>(
    sandbox: &Sandbox,
    operation: impl FnOnce(&mut D, &mut Clock) -> Result<Vec<D::Id>, String>,
) -> Response {
    let mut world = sandbox.world();
    let (data, clock) = D::parts(&mut world);
    let at = D::format_time(clock.now());
    match operation(data, clock) {
        Ok(mut ids) => {
            ids.sort_unstable();
            let body =
                serde_json::json!({ "ids": ids, "at": at, "now": D::format_time(clock.now()) });
            json_reply(StatusCode::OK, body.to_string())
        }
        Err(message) => bad_request(&message),
    }
}

/// Up to `n` distinct elements of `ids`, chosen at random (a partial Fisher–Yates shuffle).
fn pick<T>(mut ids: Vec<T>, n: usize, rng: &mut SplitMix64) -> Vec<T> {
    let n = n.min(ids.len());
    for i in 0..n {
        let j = i + rng.below((ids.len() - i) as u64) as usize;
        ids.swap(i, j);
    }
    ids.truncate(n);
    ids
}
