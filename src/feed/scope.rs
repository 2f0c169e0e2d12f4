//! The `stream` filter of a feed request, and the hash of it that a token carries.

use std::fmt;

use sha2::{Digest, Sha256};

use super::FeedError;
use super::token::ScopeHash;
use crate::spec::change::StreamRef;

/// Streams one `stream` filter may name.
const MAX_SCOPE: usize = 50;

/// A normalized `stream` filter: sorted, without duplicates; empty for the whole feed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(Vec<StreamRef>);

impl Scope {
    /// Reads `source/stream[,source/stream...]`; missing or blank is the whole feed.
    pub fn parse(filter: Option<&str>) -> Result<Self, FeedError> {
        let mut streams = Vec::new();
        for item in filter.unwrap_or_default().split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            streams.push(
                item.parse::<StreamRef>()
                    .map_err(FeedError::InvalidFilter)?,
            );
        }
        streams.sort();
        streams.dedup();
        if streams.len() > MAX_SCOPE {
            return Err(FeedError::InvalidFilter(format!(
                "a filter names at most {MAX_SCOPE} streams"
            )));
        }
        Ok(Scope(streams))
    }

    pub fn streams(&self) -> &[StreamRef] {
        &self.0
    }

    pub(super) fn hash(&self) -> ScopeHash {
        let mut hasher = Sha256::new();
        hasher.update(b"tidemark feed scope 1\n");
        for stream in &self.0 {
            hasher.update(stream.to_string().as_bytes());
            hasher.update(b"\n");
        }
        let digest = hasher.finalize();
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&digest[..8]);
        ScopeHash(hash)
    }
}

/// The filter as a request would give it: `source/stream` names joined by commas, empty
/// for the whole feed. [`Scope::parse`] reads it back as the same scope.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, stream) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{stream}")?;
        }
        Ok(())
    }
}
