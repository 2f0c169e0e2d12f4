//! Positions in the feed: decoded from `since` against this database's epoch and the
//! request's scope, checked against each snapshot's streams, head and purge horizon, and
//! issued as tokens.

use super::read::Batch;
use super::token::{FeedToken, InvalidToken};
use super::{Feed, FeedError, Scope};
use crate::spec::change::StreamRef;
use crate::store::FeedStream;

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Changes after this position.
    pub(super) at: i64,
    /// The snapshot that handed the position out; `None` for the beginning.
    pub(super) issued: Option<Issued>,
}

/// What the snapshot that handed out a position said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Issued {
    pub(super) head: i64,
    pub(super) horizon: i64,
}

impl Position {
    pub(super) const START: Position = Position {
        at: 0,
        issued: None,
    };

    /// The id of the scope's stream `name` as a snapshot found it (`None`: it does not
    /// exist), if this position can still follow that stream.
    pub(super) fn stream_id(
        &self,
        name: &StreamRef,
        found: Option<FeedStream>,
    ) -> Result<i64, FeedError> {
        match (found, self.issued) {
            (None, None) => Err(FeedError::NoStream(name.clone())),
            (None, Some(_)) => Err(FeedError::Expired(format!(
                "stream `{name}` of this token's filter no longer exists"
            ))),
            (Some(stream), Some(issued)) if stream.created_seq > issued.head => {
                Err(FeedError::Expired(format!(
                    "stream `{name}` was removed and created again since this token was issued"
                )))
            }
            (Some(stream), _) => Ok(stream.id),
        }
    }

    /// Whether a snapshot with this `head` and purge `horizon` still holds every change
    /// after this position.
    pub(super) fn followable(&self, head: i64, horizon: i64) -> Result<(), FeedError> {
        // Tombstones purged before the holder started reading were never its concern; a
        // purge since its last read that reached past its position may have taken a
        // deletion it still needs.
        if let Some(issued) = self.issued
            && horizon > issued.horizon
            && horizon > self.at
        {
            return Err(FeedError::Expired(
                "deletions after this token's position were purged (tombstone retention)".into(),
            ));
        }
        if self.at > head {
            return Err(FeedError::Expired(
                "this token is ahead of the feed: the database was restored or reset".into(),
            ));
        }
        Ok(())
    }
}

impl Feed {
    /// Checks a `since` token against this database and the request's filter. What only
    /// a snapshot can tell (retention, removed streams) is checked by each read.
    pub fn since(&self, text: Option<&str>, scope: &Scope) -> Result<Position, FeedError> {
        let text = text.map(str::trim).unwrap_or_default();
        if text.is_empty() {
            return Ok(Position::START);
        }
        let token = self.key.decode(text).map_err(|e| match e {
            // Its secret is another database's: this one cannot check it, but a token
            // that claims another epoch could at most make its holder start over.
            InvalidToken::Unauthenticated { epoch } if epoch != self.epoch => other_epoch(),
            _ => FeedError::InvalidSince,
        })?;
        if token.epoch != self.epoch {
            return Err(other_epoch());
        }
        if token.scope != scope.hash() {
            return Err(FeedError::ScopeMismatch);
        }
        Ok(Position {
            at: token.position,
            issued: Some(Issued {
                head: token.head,
                horizon: token.horizon,
            }),
        })
    }

    /// The token of `position` in the snapshot `batch` was read from.
    pub(super) fn token(&self, scope: &Scope, position: i64, batch: &Batch) -> String {
        self.key.encode(&FeedToken {
            epoch: self.epoch,
            scope: scope.hash(),
            position,
            head: batch.head,
            horizon: batch.horizon,
        })
    }

    /// The token a request gave for `position` (tokens have one text each), or `None`
    /// for the beginning.
    pub(super) fn since_token(&self, scope: &Scope, position: Position) -> Option<String> {
        position.issued.map(|issued| {
            self.key.encode(&FeedToken {
                epoch: self.epoch,
                scope: scope.hash(),
                position: position.at,
                head: issued.head,
                horizon: issued.horizon,
            })
        })
    }

    /// A token for "from now on" in `scope`.
    pub async fn head(&self, scope: &Scope) -> Result<String, FeedError> {
        let batch = self.read(scope, Position::START, 0).await?;
        Ok(self.token(scope, batch.head, &batch))
    }
}

/// A token of another database (or of this one before it was recreated).
fn other_epoch() -> FeedError {
    FeedError::Expired("`since` was issued by another database (its feed epoch differs)".into())
}
