//! The request of one page: the stream's request template (method, path, query, headers
//! and body, whose placeholders get the values the strategy has for this request) with
//! the strategy's own parameters added, as the upstream client sends it.

use std::sync::Arc;

use url::Url;

use super::strategy::Ask;
use super::template;
use crate::problem::{Problem, ProblemType};
use crate::spec::names::HttpUrl;
use crate::spec::source::{Method, RequestSpec};

/// One request, as a pagination strategy builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub target: Target,
    /// The stream's own headers; the source's headers and credentials are added.
    pub headers: Vec<(String, String)>,
    /// A JSON body, for POST.
    pub body: Option<serde_json::Value>,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `base_url` + `path` (already percent-encoded), then `query` appended in order
    /// (values sent verbatim, percent-encoded).
    Path {
        path: String,
        query: Vec<(String, String)>,
    },
    /// A full URL, such as a `link` stream's next URL. It must be on the origin (scheme,
    /// host and port) of `base_url`, or it is never requested.
    Url(Url),
}

impl Target {
    /// The URL path, for logs.
    pub fn path(&self) -> &str {
        match self {
            Target::Path { path, .. } => path,
            Target::Url(url) => url.path(),
        }
    }
}

/// A stream's request template: method, path, query, headers and body, each of which may
/// hold placeholders.
#[derive(Debug)]
pub struct RequestTemplate {
    method: Method,
    /// `base_url` without a query: its path is the prefix of every request's.
    base: Url,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<serde_json::Value>,
    /// A child stream's parent record, for `{{parent.<pointer>}}`.
    parent: Option<Arc<serde_json::Value>>,
}

impl RequestTemplate {
    /// The template of `request` on a source at `base_url`.
    pub fn new(base_url: &HttpUrl, request: &RequestSpec) -> Result<Self, Problem> {
        let base = base_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{}", request.path)).map_err(|e| {
            Problem::new(
                ProblemType::InvalidRequest,
                format!("`{base}{}`: {e}", request.path),
            )
        })?;
        let base = Url::parse(base)
            .map_err(|e| Problem::new(ProblemType::InvalidRequest, format!("`{base}`: {e}")))?;
        Ok(RequestTemplate {
            method: request.method,
            base,
            path: request.path.as_str().to_owned(),
            query: request
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            headers: request
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: request.body.clone(),
            parent: None,
        })
    }

    /// This template for the listing of one parent record of a child stream.
    pub fn for_parent(&self, parent: serde_json::Value) -> Self {
        RequestTemplate {
            method: self.method,
            base: self.base.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            parent: Some(Arc::new(parent)),
        }
    }

    /// The request for `ask`, and the URL it reads (relative next links resolve against
    /// it). A query parameter or header whose placeholder has no value is left out.
    pub fn request(&self, mut ask: Ask) -> (Request, Url) {
        if self.parent.is_some() {
            ask.values.parent = self.parent.clone();
        }
        let values = &ask.values;
        let (target, url) = match ask.url {
            Some(url) => (Target::Url(url.clone()), url),
            None => {
                let path = template::path(&self.path, values);
                let mut query: Vec<(String, String)> = self
                    .query
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), template::text(v, values)?)))
                    .collect();
                query.extend(ask.query);
                let mut url = self.base.clone();
                url.set_path(&format!(
                    "{}/{}",
                    self.base.path().trim_end_matches('/'),
                    path.trim_start_matches('/')
                ));
                if !query.is_empty() {
                    url.query_pairs_mut().extend_pairs(&query);
                }
                (Target::Path { path, query }, url)
            }
        };
        let request = Request {
            method: self.method,
            target,
            headers: self
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), template::text(v, values)?)))
                .collect(),
            body: self.body.as_ref().map(|body| template::body(body, values)),
        };
        (request, url)
    }
}
