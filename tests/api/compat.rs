//! Every spec that was valid before keeps its meaning (docs/design.md §4a: stored specs
//! are parsed again at every read). Each spec of `examples/sources/`, `tests/api/fixtures/`
//! and the source of docs/design.md §6 is parsed as it is, and its parsed form must
//! re-serialize to exactly what the code before the composable pieces made of it
//! (`fixtures/reserialized/`, generated from that code).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tidemark::spec::SourceSpec;
use tidemark::spec::de::parse;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(fixture name, spec text)` of every spec of the corpus.
fn corpus() -> Vec<(String, String)> {
    let mut specs = Vec::new();
    for (dir, prefix) in [
        ("examples/sources", "examples"),
        ("tests/api/fixtures", "fixtures"),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for path in files {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            specs.push((
                format!("{prefix}-{stem}"),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    specs.push(("design-section-6".to_owned(), design_example()));
    specs
}

/// The JSON block after "A complete source" in docs/design.md §6.
fn design_example() -> String {
    let design = std::fs::read_to_string(root().join("docs/design.md")).unwrap();
    let at = design
        .find("A complete source, as `POST /v1/sources` takes it")
        .expect("docs/design.md §6 has its complete source");
    let block = &design[at..];
    let start = block.find("```json\n").unwrap() + "```json\n".len();
    let end = start + block[start..].find("```").unwrap();
    block[start..end].to_owned()
}

fn reserialized(text: &str, what: &str) -> Value {
    let spec: SourceSpec = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e:?}"));
    serde_json::to_value(&spec).unwrap()
}

fn expected_path(name: &str) -> PathBuf {
    root().join(Path::new("tests/api/fixtures/reserialized").join(format!("{name}.json")))
}

#[test]
fn every_spec_valid_before_re_serializes_as_before() {
    let corpus = corpus();
    assert!(corpus.len() >= 8, "the corpus lost its files");
    for (name, text) in corpus {
        let value = reserialized(&text, &name);
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(expected_path(&name))
                .unwrap_or_else(|e| panic!("{name}: no expected form: {e}")),
        )
        .unwrap();
        assert_eq!(value, expected, "{name} re-serializes differently");
    }
}
