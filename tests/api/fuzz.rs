//! Bounded parser fuzzing, run by `cargo test`: the parsers that take input from outside
//! (source specs from the API, upstream reply bodies, feed tokens, the upstream
//! allowlist) get thousands of random and mutated inputs from a seeded PRNG and must
//! never panic. Each failure names its seed and case, so it can be replayed; the counts
//! keep the whole module under a few seconds in a debug build.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use tidemark::feed::token::{Epoch, FeedToken, ScopeHash, TokenKey};
use tidemark::paginate::extract::extract;
use tidemark::spec::SourceSpec;
use tidemark::spec::de::parse;
use tidemark::spec::names::JsonPointer;
use tidemark::spec::source::RecordsSpec;
use tidemark::store::Sealer;
use tidemark::store::SecretKey;
use tidemark::upstream::policy::HostPolicy;

const SEED: u64 = 0x71de_4a2c;

/// The source of docs/design.md §6.
const DESIGN_SOURCE: &str = include_str!("fixtures/design_source.json");

/// Names a spec or a reply is made of, so random objects often look almost right.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "name", "base_url", "auth", "type", "token", "value", "env", "redacted", "encrypted",
    "bearer", "basic", "header", "query", "oauth2", "grant", "token_url", "client_id",
    "client_secret", "refresh_token", "username", "password", "headers", "rate_limit",
    "timeout_ms", "retry", "max_attempts", "webhook_secret", "streams", "request", "method",
    "path", "body", "records", "key", "updated_at", "deleted", "pointer", "equals",
    "pagination", "keyset", "token", "position", "offset", "link", "none", "limit", "since",
    "until", "next", "schedule", "every_seconds", "cron", "deletes", "id", "data", "meta",
    "items", "archived", "", "~", "/", "a/b", "é",
];

/// Scalars that tend to break parsers: huge and exact numbers, escapes, lone surrogates,
/// pointers, templates, URLs of every kind.
#[rustfmt::skip]
const SCALARS: &[&str] = &[
    "null", "true", "false", "0", "-0", "1", "-1", "1.5", "1e999", "-1e-999", "1E+2",
    "18446744073709551616", "-9223372036854775809", "1160406004324630614",
    "1684739969.358085", "0.1e-5", "\"\"", "\" \"", "\"x\"", "\"\\u0000\"",
    "\"\\ud83d\\ude00\"", "\"\\ud800\"", "\"\\\\\"", "\"/id\"", "\"/data/0/id\"",
    "\"~1~0\"", "\"/a~2\"", "\"{{since}}\"", "\"{{limit}}\"", "\"GET\"", "\"POST\"",
    "\"keyset\"", "\"bearer\"", "\"oauth2\"", "\"client_credentials\"", "\"refresh_token\"",
    "\"http://127.0.0.1:9000\"", "\"https://h/x?q=1#f\"", "\"http://169.254.169.254\"",
    "\"http://[fd00:ec2::254]\"", "\"http://u:p@h\"", "\"ftp://h\"", "\"0 */15 * * * *\"",
    "\"* * *\"", "\"X-Api-Key\"", "\"Authorization\"", "\"bad header\\n\"",
    "\"SHOP_TOKEN\"", "\"1X\"", "\"2017-09-04 00:00:00 +03:00\"",
    "\"1970-01-01T00:00:00Z\"", "\"iso8601\"", "\"unix_ms\"", "\"max_record\"",
    "{\"value\": \"s3cret\"}", "{\"env\": \"SHOP_TOKEN\"}", "{\"redacted\": true}",
    "{\"encrypted\": \"AAAA\"}", "[0, 0]", "[]", "{}",
];

/// Random JSON text, at most `depth` levels deep.
fn random_json(rng: &mut StdRng, depth: u32) -> String {
    let kinds = if depth == 0 { 2 } else { 4 };
    match rng.random_range(0..kinds) {
        0 => SCALARS[rng.random_range(0..SCALARS.len())].to_owned(),
        1 => format!("{}", rng.random::<i64>() >> rng.random_range(0..63)),
        2 => {
            let items: Vec<String> = (0..rng.random_range(0..4))
                .map(|_| random_json(rng, depth - 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let members: Vec<String> = (0..rng.random_range(0..5))
                .map(|_| {
                    let name = serde_json::to_string(WORDS[rng.random_range(0..WORDS.len())])
                        .unwrap_or_default();
                    format!("{name}:{}", random_json(rng, depth - 1))
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }
    }
}

/// A value somewhere inside `value`, chosen by a random walk.
fn random_node<'a>(rng: &mut StdRng, value: &'a mut Value) -> &'a mut Value {
    let len = match &*value {
        Value::Object(map) => map.len(),
        Value::Array(items) => items.len(),
        _ => 0,
    };
    if len == 0 || rng.random_bool(0.3) {
        return value;
    }
    let i = rng.random_range(0..len);
    match value {
        Value::Object(map) => {
            let child = map
                .values_mut()
                .nth(i)
                .expect("the index is below the length");
            random_node(rng, child)
        }
        Value::Array(items) => random_node(rng, &mut items[i]),
        other => other,
    }
}

/// `doc` with a few structural changes: a value replaced, a member removed or added.
fn mutate_structure(rng: &mut StdRng, doc: &Value) -> String {
    let mut doc = doc.clone();
    for _ in 0..rng.random_range(1..4) {
        let replacement: Value = serde_json::from_str(&random_json(rng, 3)).unwrap_or(Value::Null);
        let node = random_node(rng, &mut doc);
        match (rng.random_range(0..3), node) {
            (0, Value::Object(map)) if !map.is_empty() => {
                let i = rng.random_range(0..map.len());
                if let Some(name) = map.keys().nth(i).cloned() {
                    map.remove(&name);
                }
            }
            (1, Value::Object(map)) => {
                let name = WORDS[rng.random_range(0..WORDS.len())];
                map.insert(name.to_owned(), replacement);
            }
            (_, node) => *node = replacement,
        }
    }
    doc.to_string()
}

/// `text` with a few byte-level changes: cuts, repeats, stray bytes and tokens.
fn mutate_bytes(rng: &mut StdRng, text: &[u8]) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"\\",
        b"\\u",
        b"null",
        b"-",
        b"e9",
        b"\xff",
        b"\xc3",
        b"\0",
        b" ",
        b"\"type\":",
        b"[[[[[[[[[[",
    ];
    let mut out = text.to_vec();
    for _ in 0..rng.random_range(1..5) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..5) {
            0 => {
                let end = (at + rng.random_range(0..16)).min(out.len());
                out.drain(at..end);
            }
            1 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            2 if at < out.len() => out[at] = rng.random(),
            3 => {
                let end = (at + rng.random_range(0..32)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// A random inline secret (quotes, escapes, non-ASCII and control characters included),
/// in one of the forms a client may send it, or an `env` reference.
fn random_secret(rng: &mut StdRng) -> String {
    const CHARS: &[char] = &[
        'a', 'Z', '0', '"', '\\', '/', 'é', '😀', '\u{0}', '\n', ' ', '~', '{',
    ];
    let text: String = (0..rng.random_range(1..12))
        .map(|_| CHARS[rng.random_range(0..CHARS.len())])
        .collect();
    let text = serde_json::to_string(&text).unwrap_or_default();
    match rng.random_range(0..4) {
        0 => text,
        1 => format!("{{\"value\": {text}}}"),
        2 => format!("{{ \"value\" :{text} ,\"value\":{text}}}"),
        _ => r#"{"env": "SHOP_TOKEN"}"#.to_owned(),
    }
}

/// The design source with random credentials of a random auth kind, a random webhook
/// secret and a random body template: mostly valid, so what follows parsing (encryption
/// at rest) is exercised too.
fn random_credentials(rng: &mut StdRng, design: &Value) -> String {
    let kind = rng.random_range(0..6);
    let mut secret = || random_secret(rng);
    let auth = match kind {
        0 => format!(r#"{{"type": "bearer", "token": {}}}"#, secret()),
        1 => format!(
            r#"{{"type":"basic","username":"u","password":{}}}"#,
            secret()
        ),
        2 => format!(
            r#"{{"type": "header", "name": "X-Key", "value": {}}}"#,
            secret()
        ),
        3 => format!(r#"{{"type": "query", "name": "k", "value": {}}}"#, secret()),
        4 => format!(
            r#"{{"type": "oauth2", "grant": "client_credentials", "client_id": "c",
                "token_url": "http://127.0.0.1:1/t", "client_secret": {}}}"#,
            secret()
        ),
        _ => format!(
            r#"{{"type": "oauth2", "grant": "refresh_token", "client_id": "c",
                "token_url": "http://127.0.0.1:1/t", "refresh_token": {}, "client_secret": {}}}"#,
            secret(),
            secret()
        ),
    };
    let webhook = secret();
    let variables = random_json(rng, 3);
    let mut doc = design.clone();
    if let Some(Value::Object(body)) = doc.pointer_mut("/streams/1/request/body") {
        let variables = serde_json::from_str(&variables).unwrap_or(Value::Null);
        body.insert("extensions".into(), variables);
    }
    if let Value::Object(map) = &mut doc {
        map.remove("auth");
        map.remove("webhook_secret");
    }
    let rest = doc.to_string();
    let rest = rest.strip_prefix('{').unwrap_or(&rest);
    format!("{{\"auth\" : {auth},\n \"webhook_secret\":{webhook}, {rest}")
}

/// Runs `check` on `input`, turning a panic into a failure that names the case.
fn no_panic(what: &str, case: usize, input: &[u8], check: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(check)).is_err() {
        panic!(
            "{what}: case {case} (seed {SEED:#x}) panicked on {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// A spec that parses must also serialize, pass the host check, and come back equal
/// through encryption at rest. Returns whether it parsed.
fn check_spec(input: &[u8], sealer: &Sealer) -> bool {
    let Ok(spec) = parse::<SourceSpec>(input) else {
        return false;
    };
    assert!(serde_json::to_string(&spec).is_ok());
    let _ = HostPolicy::default().check(spec.base_url.as_str());
    let text = std::str::from_utf8(input).expect("a spec that parsed is UTF-8");
    let stored = sealer.seal(&spec, text).expect("a parsed spec seals");
    assert_eq!(sealer.open(&stored).expect("a sealed spec opens"), spec);
    assert_eq!(
        sealer
            .open_streams(&stored)
            .expect("and its streams")
            .streams,
        spec.streams
    );
    true
}

#[test]
fn source_specs_never_panic_the_parser() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let design: Value = serde_json::from_str(DESIGN_SOURCE).expect("the fixture is JSON");
    let key: SecretKey = "42".repeat(32).parse().expect("a valid key");
    let sealer = Sealer::new(Some(&key));
    let mut parsed = 0;
    for case in 0..2500 {
        let input = match case % 5 {
            0 => mutate_structure(&mut rng, &design).into_bytes(),
            1 => mutate_bytes(&mut rng, DESIGN_SOURCE.as_bytes()),
            2 => {
                let text = mutate_structure(&mut rng, &design);
                mutate_bytes(&mut rng, text.as_bytes())
            }
            3 => random_json(&mut rng, 6).into_bytes(),
            _ => random_credentials(&mut rng, &design).into_bytes(),
        };
        no_panic("source spec", case, &input, || {
            parsed += usize::from(check_spec(&input, &sealer))
        });
    }
    // Deep nesting is refused, not recursed into until the stack ends.
    for deep in ["[".repeat(100_000), "{\"a\":".repeat(100_000)] {
        no_panic("deep spec", 0, deep.as_bytes(), || {
            assert!(parse::<SourceSpec>(deep.as_bytes()).is_err())
        });
    }
    // The mutations are not all refused at once: some still make valid specs.
    assert!(parsed > 300, "only {parsed} inputs parsed");
}

#[test]
fn reply_bodies_never_panic_the_extractor() {
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    let records: Vec<RecordsSpec> = [
        r#"{"path": "", "key": "/id"}"#,
        r#"{"path": "/data", "key": "/id", "updated_at": "/updated_at",
            "deleted": {"pointer": "/archived"}}"#,
        r#"{"path": "/items", "key": "/k/0", "updated_at": "/u",
            "deleted": {"pointer": "/d", "equals": {"x": [1]}}}"#,
        r#"{"path": "/a~1b/0/~0", "key": "/id"}"#,
    ]
    .iter()
    .map(|text| serde_json::from_str(text).expect("a valid records spec"))
    .collect();
    let next: Vec<Option<JsonPointer>> = [None, Some("/meta/next"), Some("/data/0"), Some("")]
        .into_iter()
        .map(|p| p.map(|p| JsonPointer::try_from(p.to_owned()).expect("a valid pointer")))
        .collect();
    let reply = r#"{"data": [{"id": 1160406004324630614, "updated_at": "2017-09-04 00:00:00 +03:00",
        "archived": false, "x": [1.50, {"y": null}]}, {"id": "b", "updated_at": 1684739969.358085,
        "archived": true}], "items": [{"k": [7], "u": 1, "d": {"x": [1]}}],
        "a/b": [{"~": [{"id": 1}]}], "meta": {"next": [1684739969.358085, 1160406004324630614]}}"#;
    let reply_value: Value = serde_json::from_str(reply).expect("the reply is JSON");
    let mut pages = 0;
    for case in 0..10_000 {
        let body = match case % 4 {
            0 => mutate_structure(&mut rng, &reply_value).into_bytes(),
            1 => mutate_bytes(&mut rng, reply.as_bytes()),
            2 => random_json(&mut rng, 6).into_bytes(),
            _ => {
                let text = mutate_structure(&mut rng, &reply_value);
                mutate_bytes(&mut rng, text.as_bytes())
            }
        };
        let spec = &records[case % records.len()];
        let pointer = next[(case / 4) % next.len()].as_slice();
        no_panic("reply body", case, &body, || {
            if let Ok(page) = extract(&body, spec, pointer) {
                pages += 1;
                for item in &page.records {
                    assert!(!item.key.is_empty());
                    assert!(serde_json::from_str::<Value>(&item.text).is_ok());
                }
            }
        });
    }
    for deep in ["[".repeat(100_000), "{\"data\":".repeat(100_000)] {
        no_panic("deep body", 0, deep.as_bytes(), || {
            assert!(extract(deep.as_bytes(), &records[1], next[1].as_slice()).is_err())
        });
    }
    assert!(pages > 100, "only {pages} bodies gave a page");
}

#[test]
fn feed_tokens_and_allowlists_never_panic_their_parsers() {
    let mut rng = StdRng::seed_from_u64(SEED + 2);
    let key = TokenKey::new([7; 32]);
    let token = key.encode(&FeedToken {
        epoch: Epoch([1; 8]),
        scope: ScopeHash([2; 8]),
        position: 10,
        head: 12,
        horizon: 3,
    });
    for case in 0..3000 {
        let text = mutate_bytes(&mut rng, token.as_bytes());
        let text = String::from_utf8_lossy(&text);
        no_panic("feed token", case, text.as_bytes(), || {
            // A changed token is never taken for one this server issued.
            if text != token {
                assert!(key.decode(&text).is_err());
            }
        });
        let list = mutate_bytes(&mut rng, b"api.example.com:8443, *.shop.example,[::1]:80");
        let list = String::from_utf8_lossy(&list);
        let url = mutate_bytes(&mut rng, b"http://a.shop.example:8080/x");
        let url = String::from_utf8_lossy(&url);
        no_panic("allowlist", case, list.as_bytes(), || {
            if let Ok(policy) = list.parse::<HostPolicy>() {
                let _ = policy.check(&url);
            }
        });
    }
}
