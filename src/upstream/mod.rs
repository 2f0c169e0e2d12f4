//! Talking to upstream APIs: the HTTP client (auth, throttle, retry, errors) and the
//! SSRF guard. What to ask for and how to read the replies is [`crate::paginate`]'s.

pub mod client;
pub mod policy;
