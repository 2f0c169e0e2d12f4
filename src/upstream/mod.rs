//! Talking to upstream APIs: the HTTP client (auth, throttle, retry), record extraction,
//! and one state machine per pagination strategy.

pub mod client;
pub mod extract;
pub mod keyset;
pub mod link;
pub mod offset;
pub mod policy;
pub mod position;
pub mod strategy;
pub mod time;
pub mod token;
