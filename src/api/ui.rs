//! The operator console at `/ui`: a page and its ES modules, all compiled into the binary,
//! that use nothing but the public `/v1` API from the browser. Like `/docs` it is public
//! (the page holds no data; its API calls carry the token) and not in the OpenAPI
//! document. Every response forbids loading anything from anywhere but this server.

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Only this server: scripts, styles, images and API calls; no inline script or style
/// attribute, no plugin, no framing, no form posting elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// A strong validator: the FNV-1a hash of the body, computed at compile time.
    etag: u64,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const JSON: &str = "application/json";

impl Asset {
    const fn new(path: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
        Asset {
            path,
            content_type,
            body,
            etag: fnv1a(body),
        }
    }
}

/// A file of `src/api/ui/`, served as `/ui/<path>`.
macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset::new($path, $content_type, include_bytes!(concat!("ui/", $path)))
    };
}

/// The repository's example sources (`examples/sources/`), for the spec editor to start from.
macro_rules! example {
    ($name:literal) => {
        Asset::new(
            concat!("examples/", $name, ".json"),
            JSON,
            include_bytes!(concat!("../../examples/sources/", $name, ".json")),
        )
    };
}

const INDEX: Asset = asset!("index.html", HTML);

const ASSETS: &[Asset] = &[
    asset!("style.css", CSS),
    asset!("icon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("jsonpos.js", JS),
    asset!("pages/sources.js", JS),
    asset!("pages/stream.js", JS),
    asset!("pages/jobs.js", JS),
    asset!("pages/editor.js", JS),
    asset!("pages/feed.js", JS),
    asset!("pages/consumers.js", JS),
    example!("insales"),
    example!("pos"),
    example!("carrot"),
    example!("reqon"),
    example!("link"),
];

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => serve(asset, &headers),
        // An empty 404, made a problem document by the problem layer like any other.
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else {
        (StatusCode::OK, Body::from(asset.body))
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if !fresh {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
    }
    // The files change with the binary and their names do not: revalidate every time
    // (cheap: a matching ETag answers 304 with no body).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file added to `src/api/ui/` but not to [`ASSETS`] would be a 404 in the browser.
    #[test]
    fn every_file_of_the_folder_is_served_with_the_type_of_its_extension() {
        fn walk(dir: &std::path::Path, root: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("src/api/ui is readable") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    walk(&path, root, found);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    found.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/ui");
        let mut on_disk = Vec::new();
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut served: Vec<String> = ASSETS
            .iter()
            .chain([&INDEX])
            .filter(|a| !a.path.starts_with("examples/"))
            .map(|a| a.path.to_owned())
            .collect();
        served.sort();
        assert_eq!(on_disk, served);
        for asset in ASSETS.iter().chain([&INDEX]) {
            let expected = match asset.path.rsplit('.').next() {
                Some("html") => HTML,
                Some("js") => JS,
                Some("css") => CSS,
                Some("svg") => SVG,
                Some("json") => JSON,
                other => panic!("no content type for {other:?}"),
            };
            assert_eq!(asset.content_type, expected, "{}", asset.path);
        }
    }
}
