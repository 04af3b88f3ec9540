//! The fuzz targets' short run, on the stable toolchain inside `cargo test`:
//! every seed (`fuzz/corpus/<target>/`, the GitHub payload fixtures, the
//! shipped configs) and every kept crash (`fuzz/regressions/<target>/`),
//! then a bounded number of random inputs and of seeds mutated byte-wise and,
//! for JSON, structurally. `PROPTEST_CASES=N` sets the number of random and
//! of mutated inputs per target (default 256); `cargo xtask fuzz` is the
//! long, coverage-guided run.

use std::path::{Path, PathBuf};

use hangar_fuzz::{TARGETS, api, config, webhook};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// 256 cases unless `PROPTEST_CASES` says otherwise; a failing case is
/// kept in `short_runs.proptest-regressions` and re-run first.
fn cases() -> Config {
    let mut c = Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    c
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|p| p.file_name().is_some_and(|n| n != ".gitkeep"));
    v.sort();
    v
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const SECRET: &[u8] = b"It's a Secret to Everybody";

/// GitHub's sample deliveries (`fixtures/github-webhooks`).
fn payloads() -> &'static [Vec<u8>] {
    static PAYLOADS: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(load_payloads);
    &PAYLOADS
}

fn load_payloads() -> Vec<Vec<u8>> {
    let dir = root().join("fixtures/github-webhooks");
    let mut v: Vec<Vec<u8>> = files(&dir.join("workflow_job"))
        .iter()
        .map(|p| read(p))
        .collect();
    v.extend(files(&dir.join("ping")).iter().map(|p| read(p)));
    assert!(v.len() >= 6, "the webhook fixtures are missing");
    v
}

/// Seeds of one target, read once.
fn seeds(target: &str) -> &'static [Vec<u8>] {
    type Corpus = Vec<Vec<u8>>;
    static SEEDS: std::sync::LazyLock<Vec<(&str, Corpus)>> =
        std::sync::LazyLock::new(|| TARGETS.iter().map(|(n, _)| (*n, load_seeds(n))).collect());
    &SEEDS
        .iter()
        .find(|(n, _)| *n == target)
        .expect("a target")
        .1
}

/// Seeds of one target: its corpus folder, plus what the repository ships
/// that the target reads.
fn load_seeds(target: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = files(&root().join("fuzz/corpus").join(target))
        .iter()
        .map(|p| read(p))
        .collect();
    match target {
        "webhook" => {
            for body in payloads() {
                for mode in 0..6 {
                    v.push(webhook::input(SECRET, mode, body));
                }
            }
        }
        "config" => {
            v.extend(files(&root().join("config")).iter().map(|p| read(p)));
        }
        _ => {}
    }
    assert!(!v.is_empty(), "no seeds for {target}");
    v
}

/// Runs `f` on `data`, naming the input when it panics.
fn run_named(name: &str, what: &str, f: hangar_fuzz::Target, data: &[u8]) {
    if std::panic::catch_unwind(|| f(data)).is_err() {
        panic!("fuzz target {name} failed on {what}");
    }
}

#[test]
fn seeds_and_kept_crashes_pass() {
    for (name, f) in TARGETS {
        for (i, s) in seeds(name).iter().enumerate() {
            run_named(name, &format!("seed {i}"), f, s);
        }
        for p in files(&root().join("fuzz/regressions").join(name)) {
            run_named(name, &p.display().to_string(), f, &read(&p));
        }
    }
}

/// The seeds reach what they are for: valid signatures open the parser,
/// the example config parses, each request body parses as its type.
#[test]
fn seeds_reach_the_parsers() {
    use hangar_github::webhook::{sign, signature_from_headers, verify};
    let body = &payloads()[0];
    let sig = signature_from_headers(Some(&sign(SECRET, body)), None).unwrap();
    verify(SECRET, body, &sig).unwrap();
    let example = read(&root().join("config/hangard.example.toml"));
    hangar_daemon::config::Config::parse(std::str::from_utf8(&example).unwrap()).unwrap();
    let pool = read(&root().join("fuzz/corpus/api/pool-create.json"));
    serde_json::from_slice::<hangar_api::PoolCreate>(&pool).unwrap();
}

/// Byte-level mutations of a seed.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Tokens that matter to the formats the targets read.
const TOKENS: &[&str] = &[
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "=",
    "\n",
    "[[provider]]",
    "[server]",
    "null",
    "true",
    "-1",
    "0",
    "1e999",
    "-0",
    "9223372036854775808",
    "18446744073709551616",
    "4294967296",
    "\"\"",
    "'''",
    "\"\"\"",
    "#",
    "\u{0}",
    "é",
    "\u{feff}",
    "sha256=",
    "sha1=",
    "kind = \"fake\"",
    "max_runners",
    "labels",
    "workflow_job",
];

fn mutate(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *m {
            Mutation::FlipBit(i, b) if !data.is_empty() => {
                let i = i % data.len();
                data[i] ^= 1 << b;
            }
            Mutation::SetByte(i, v) if !data.is_empty() => {
                let i = i % data.len();
                data[i] = v;
            }
            Mutation::Insert(i, t) => {
                let i = at(i, data.len());
                let tok = TOKENS[t % TOKENS.len()].as_bytes();
                data.splice(i..i, tok.iter().copied());
            }
            Mutation::Delete(i, n) if !data.is_empty() => {
                let i = i % data.len();
                let end = (i + n).min(data.len());
                data.drain(i..end);
            }
            Mutation::Duplicate(i, n) if !data.is_empty() => {
                let i = i % data.len();
                let end = (i + n).min(data.len());
                let piece = data[i..end].to_vec();
                data.splice(end..end, piece);
            }
            Mutation::Truncate(i) => data.truncate(at(i, data.len())),
            _ => {}
        }
    }
    data
}

/// Values worth putting anywhere in a JSON document.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::from(u32::MAX)),
        Just(Value::from(-1)),
        ".{0,24}".prop_map(Value::String),
        Just(Value::String("x".repeat(300))),
        Just(Value::Array(vec![])),
        Just(Value::Object(Default::default())),
        prop::collection::vec(".{0,8}".prop_map(Value::String), 0..4).prop_map(Value::Array),
    ]
}

/// Structural mutations of a JSON document: at the n-th node, replace it,
/// drop it, or rename a key.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, Value),
    Remove(usize),
    Rename(usize, String),
    AddKey(usize, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), leaf()).prop_map(|(n, v)| Edit::Replace(n, v)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), "[a-z_]{0,12}").prop_map(|(n, k)| Edit::Rename(n, k)),
        (any::<usize>(), "[a-z_]{0,12}", leaf()).prop_map(|(n, k, v)| Edit::AddKey(n, k, v)),
    ]
}

/// Applies `e` to the n-th node in document order (`n` counted down).
fn apply(v: &mut Value, e: &Edit, n: &mut usize) -> bool {
    if *n == 0 {
        match e {
            Edit::Replace(_, x) => *v = x.clone(),
            Edit::Remove(_) => match v {
                Value::Object(m) => {
                    if let Some(k) = m.keys().next().cloned() {
                        m.remove(&k);
                    }
                }
                Value::Array(a) => {
                    a.pop();
                }
                _ => *v = Value::Null,
            },
            Edit::Rename(_, to) => {
                if let Value::Object(m) = v
                    && let Some(k) = m.keys().next().cloned()
                {
                    let x = m.remove(&k).unwrap();
                    m.insert(to.clone(), x);
                }
            }
            Edit::AddKey(_, k, x) => {
                if let Value::Object(m) = v {
                    m.insert(k.clone(), x.clone());
                }
            }
        }
        return true;
    }
    *n -= 1;
    match v {
        Value::Object(m) => m.values_mut().any(|c| apply(c, e, n)),
        Value::Array(a) => a.iter_mut().any(|c| apply(c, e, n)),
        _ => false,
    }
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Object(m) => m.values().map(count).sum(),
        Value::Array(a) => a.iter().map(count).sum(),
        _ => 0,
    }
}

fn edit_json(seed: &[u8], edits: &[Edit]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(seed).ok()?;
    for e in edits {
        let at = match e {
            Edit::Replace(n, _) | Edit::Remove(n) | Edit::Rename(n, _) | Edit::AddKey(n, _, _) => {
                *n
            }
        };
        let mut n = at % count(&v);
        apply(&mut v, e, &mut n);
    }
    Some(serde_json::to_vec(&v).unwrap())
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn webhook_random(secret in prop::collection::vec(any::<u8>(), 0..40), mode in any::<u8>(),
                      body in prop::collection::vec(any::<u8>(), 0..512)) {
        webhook::run(&webhook::input(&secret, mode, &body));
    }

    #[test]
    fn webhook_mutated(pick in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..8)) {
        webhook::run(&mutate(pick.get(seeds("webhook")).clone(), &muts));
    }

    /// Payloads edited as JSON and signed right, so they reach the parser.
    #[test]
    fn webhook_edited_payloads(pick in any::<prop::sample::Index>(), edits in prop::collection::vec(edit(), 1..6),
                               secret in prop::collection::vec(any::<u8>(), 1..40)) {
        let body = edit_json(&pick.get(payloads())[..], &edits).expect("fixtures are JSON");
        webhook::run(&webhook::input(&secret, 0, &body));
    }

    #[test]
    fn config_random(text in ".{0,256}") {
        config::run(text.as_bytes());
    }

    #[test]
    fn config_mutated(pick in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..8)) {
        config::run(&mutate(pick.get(seeds("config")).clone(), &muts));
    }

    /// Configs edited line by line: keys dropped, repeated or moved.
    #[test]
    fn config_lines_edited(pick in any::<prop::sample::Index>(),
                           edits in prop::collection::vec((any::<usize>(), any::<usize>(), 0u8..3), 1..6)) {
        let text = String::from_utf8_lossy(&pick.get(seeds("config"))[..]).into_owned();
        let mut lines: Vec<&str> = text.lines().collect();
        for (a, b, op) in edits {
            if lines.is_empty() {
                break;
            }
            let (a, b) = (a % lines.len(), b % lines.len());
            match op {
                0 => { lines.remove(a); }
                1 => { let l = lines[a]; lines.insert(b, l); }
                _ => lines.swap(a, b),
            }
        }
        config::run(lines.join("\n").as_bytes());
    }

    #[test]
    fn api_random(body in prop::collection::vec(any::<u8>(), 0..256)) {
        api::run(&body);
    }

    #[test]
    fn api_mutated(pick in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..8)) {
        api::run(&mutate(pick.get(seeds("api")).clone(), &muts));
    }

    #[test]
    fn api_edited_bodies(pick in any::<prop::sample::Index>(), edits in prop::collection::vec(edit(), 1..6)) {
        let body = edit_json(&pick.get(seeds("api"))[..], &edits).expect("api seeds are JSON");
        api::run(&body);
    }
}

/// Every target has its libFuzzer binary (what `cargo xtask fuzz` runs),
/// a seed corpus and a folder for kept crashes; and nothing else is there.
#[test]
fn every_target_is_wired_for_the_long_run() {
    let manifest = std::fs::read_to_string(root().join("fuzz/libfuzzer/Cargo.toml")).unwrap();
    let manifest: toml::Table = manifest.parse().unwrap();
    let bins: Vec<(String, String)> = manifest["bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        bins.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        names
    );
    for (name, path) in &bins {
        let src = std::fs::read_to_string(root().join("fuzz/libfuzzer").join(path)).unwrap();
        assert!(
            src.contains(&format!("hangar_fuzz::{name}::run(data)")),
            "{path} does not call hangar_fuzz::{name}::run"
        );
        assert!(root().join("fuzz/corpus").join(name).is_dir());
        assert!(root().join("fuzz/regressions").join(name).is_dir());
    }
    let xtask = std::fs::read_to_string(root().join("xtask/src/fuzz.rs")).unwrap();
    let list = format!(
        "const TARGETS: [&str; {}] = [{}];",
        names.len(),
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        xtask.contains(&list),
        "xtask/src/fuzz.rs lists other targets than {list}"
    );
}
