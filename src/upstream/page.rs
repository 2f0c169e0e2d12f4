//! One page of a stream from its source: the client's [`SourceClient::fetch`], with the body
//! read by [`crate::paginate::extract`] and the reply's headers read into a [`ReplyMeta`].

use chrono::Utc;

use super::client::{BodyError, SourceClient, UpstreamError};
use crate::paginate::extract::{ExtractError, Page, extract};
use crate::paginate::link::next_from_header;
use crate::paginate::request::RequestTemplate;
use crate::paginate::strategy::{Ask, ReplyMeta};
use crate::spec::names::JsonPointer;
use crate::spec::source::RecordsSpec;

/// One page, read.
#[derive(Debug)]
pub struct FetchedPage {
    pub page: Page,
    pub reply: ReplyMeta,
    /// Requests actually sent to the upstream, retries and the OAuth 2.0 renewal included.
    pub attempts: u32,
}

/// A body that is not JSON (truncated, an error page) is worth another request; one that
/// is not shaped as the stream says would be the same again.
impl From<ExtractError> for BodyError {
    fn from(error: ExtractError) -> Self {
        match error {
            ExtractError::NotJson(detail) => BodyError::Transient(detail),
            ExtractError::Shape(detail) => BodyError::Fatal(detail),
        }
    }
}

impl SourceClient {
    /// Sends the request `ask` makes of `template` and reads its reply as `records`
    /// describes, with the values at `pointers` besides. The reply's `Date` is the upstream's
    /// clock (the gateway's when there is none); its `Link: rel="next"` and relative next
    /// URLs resolve against the request's URL as the template writes it.
    pub async fn fetch_page(
        &self,
        template: &RequestTemplate,
        ask: Ask,
        records: &RecordsSpec,
        pointers: &[JsonPointer],
    ) -> Result<FetchedPage, UpstreamError> {
        let (request, url) = template.request(ask);
        let fetched = self
            .fetch(&request, |reply| {
                extract(&reply.body, records, pointers).map_err(BodyError::from)
            })
            .await?;
        let links = fetched
            .headers
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let link_next = next_from_header(links, &url);
        Ok(FetchedPage {
            page: fetched.value,
            reply: ReplyMeta {
                upstream_now: fetched.reply_date.unwrap_or_else(Utc::now),
                link_next,
                request_url: url,
            },
            attempts: fetched.attempts,
        })
    }
}
