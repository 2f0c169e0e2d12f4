//! Pagination as pure state machines (docs/design.md §4): *cursor → next request*,
//! *reply → records + next cursor + done?*, one file per strategy, plus the since formats
//! and record extraction. No network, no database: the page loop in [`crate::sync`] sends
//! the requests and commits the pages.

pub mod extract;
pub mod keyset;
pub mod link;
pub mod offset;
pub mod position;
pub mod strategy;
pub mod time;
pub mod token;
