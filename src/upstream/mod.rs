//! Talking to upstream APIs: the HTTP client (auth, throttle, retry, errors), the SSRF
//! guard, and one page of a stream fetched with them. What to ask for and how to read the
//! replies is [`crate::paginate`]'s.

pub mod client;
pub mod page;
pub mod policy;
