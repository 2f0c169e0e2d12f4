//! Request bodies the way every client sends them: one over the limit gets its `413`
//! even from a client that writes the whole body before it reads (Python's
//! `http.client`, `urllib`, `requests`), and a body that is not a JSON object is told so.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;

use crate::support::{assert_problem, spawn, spawn_with};

/// Writes a whole `POST /v1/sources` with a body of `body_bytes`, then reads the reply to
/// the end, as a blocking client that does not read while it sends; the reply's text.
fn send_then_read(addr: &str, body_bytes: usize) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let head = format!(
        "POST /v1/sources HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {body_bytes}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let chunk = vec![b' '; 64 * 1024];
    let mut left = body_bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n])?;
        left -= n;
    }
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

#[tokio::test]
async fn a_client_that_sends_its_whole_oversized_body_first_still_reads_the_413() {
    let app = spawn_with(|c| c.max_body_bytes = 64 * 1024, None).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Far more than the socket buffers hold, so the server must read it for the client's
    // writes to finish.
    for size in [256 * 1024, 16 * 1024 * 1024] {
        let addr = addr.clone();
        let reply = tokio::task::spawn_blocking(move || send_then_read(&addr, size))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a body of {size} bytes: {e}"));
        assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
        assert!(reply.contains(r#""type":"payload-too-large""#), "{reply}");
    }
    // The server is still there.
    assert_eq!(app.get("/v1/sources").await.status(), 200);
}

#[tokio::test]
async fn a_source_that_is_a_json_array_is_told_it_must_be_an_object() {
    let app = spawn().await;
    for body in [json!([]), json!([{"name": "shop"}]), json!("shop")] {
        let problem =
            assert_problem(app.post("/v1/sources", &body).await, 422, "invalid-spec").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("expected a JSON object"), "{detail}");
        assert!(!detail.contains("invalid length"), "{detail}");
        assert_eq!(problem["pointer"], "", "{problem}");
    }
}
