//! Pagination as pure state machines (docs/design.md §4): *cursor → next request*,
//! *reply → records + next cursor + done?*, one file per strategy, plus the since filter
//! and its formats, the request template and its placeholders, and record extraction. No network, no database: the upstream
//! client sends the requests and the page loop in [`crate::sync`] commits the pages.
//!
//! Every strategy implements [`strategy::Paginator`]; [`strategy::Strategy`] picks one for
//! a stream's spec and is all the page loop sees. Where a new pagination option goes:
//! - a new strategy: a file here with a type implementing `Paginator`, its configuration
//!   in [`crate::spec::pagination`] and one arm in [`strategy::Strategy::new`];
//! - an option of one strategy: a field of its configuration, read in its file here;
//! - an option every strategy takes (docs/design.md §4a, e.g. `done`): in `Strategy`,
//!   around the `Paginator` it holds, not once per file; one several take (the `since`
//!   filter) in its own file ([`since`]), used by each of them.

pub mod anchor;
pub mod extract;
pub mod keyset;
pub mod link;
pub mod none;
pub mod offset;
pub mod position;
pub mod request;
pub mod since;
pub mod strategy;
pub mod template;
pub mod time;
pub mod token;

#[cfg(test)]
mod shift_tests;
#[cfg(test)]
mod tests;
