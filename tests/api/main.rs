//! Integration tests: the real app over real HTTP on a loopback port. One test binary
//! with modules, so the whole suite links once.

mod anchor;
mod auth;
mod bodies;
mod catalog;
mod children;
mod compat;
mod compose;
mod compose_sync;
mod conformance;
mod consumers;
mod crash;
mod errors;
mod failover;
mod failures;
mod feed;
mod fuzz;
mod history;
mod liveness;
mod openapi;
mod outage;
mod reconcile_seen;
mod resync;
mod scheduled_reconcile;
mod security;
mod sources;
mod startup;
mod store;
mod styles;
mod support;
mod sync;
