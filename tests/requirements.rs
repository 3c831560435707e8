//! `docs/requirements.md` is the map from each requirement id to the tests that cite it and the
//! source files that implement it. Its last two columns are rebuilt here from the code, and the
//! test fails when the committed file disagrees (a test renamed, a citation added or dropped, an
//! id cited that the checklist does not have). `CIBA_BLESS=1 cargo test --test requirements`
//! rewrites the file.
//!
//! What counts as a citation: a function whose name contains an id (`bc_req_04_05_…` cites
//! BC-REQ-04 and BC-REQ-05); in `tests/`, an id in a comment inside a function cites it for that
//! function; in `src/`, an id outside a test name marks the file as implementing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const DOC: &str = "docs/requirements.md";
const HEADER: &str = "| Id | Level | Source | Checklist section | What | Tests | Code |";

struct Row {
    id: String,
    fixed: [String; 4],
}

fn rows(doc: &str) -> (String, Vec<Row>) {
    let start = doc.find(HEADER).expect("the table header");
    let preamble = doc[..start].to_owned();
    let rows = doc[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 7, "a row has seven cells: {l}");
            Row {
                id: cells[0].to_owned(),
                fixed: [1, 2, 3, 4].map(|i| cells[i].to_owned()),
            }
        })
        .collect();
    (preamble, rows)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The ids a function name cites: each id spelled in snake case at a word boundary, plus the
/// two-digit numbers that follow it (`bc_req_04_05` is BC-REQ-04 and BC-REQ-05).
fn ids_in_name(name: &str, known: &BTreeSet<String>) -> Vec<String> {
    let parts: Vec<&str> = name.split('_').collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let mut matched = false;
        for len in (2..=3).rev() {
            if i + len > parts.len() {
                continue;
            }
            let id = parts[i..i + len].join("-").to_uppercase();
            if known.contains(&id) {
                let prefix = parts[i..i + len - 1].join("-").to_uppercase();
                found.push(id);
                i += len;
                while i < parts.len() && parts[i].len() == 2 && parts[i].parse::<u8>().is_ok() {
                    let next = format!("{prefix}-{}", parts[i]);
                    if !known.contains(&next) {
                        break;
                    }
                    found.push(next);
                    i += 1;
                }
                matched = true;
                break;
            }
        }
        if !matched {
            i += 1;
        }
    }
    found
}

/// Upper-case ids in a line of text (`BC-REQ-02`, `TOK-03`).
fn ids_in_text(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        let parts: Vec<&str> = word.split('-').collect();
        let ok = parts.len() >= 2
            && parts
                .last()
                .is_some_and(|n| n.len() == 2 && n.parse::<u8>().is_ok())
            && parts[..parts.len() - 1]
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_uppercase()));
        if ok {
            out.push(word.to_owned());
        }
    }
    out
}

fn fn_name(line: &str) -> Option<&str> {
    let rest = line.trim_start();
    let at = rest.find("fn ")?;
    let before = &rest[..at];
    if !before
        .split_whitespace()
        .all(|w| ["pub", "pub(crate)", "pub(super)", "async", "const"].contains(&w))
    {
        return None;
    }
    let name = &rest[at + 3..];
    let end = name.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    Some(&name[..end])
}

#[test]
fn requirements_map_matches_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(root.join(DOC)).unwrap();
    let (preamble, table) = rows(&committed);
    let known: BTreeSet<String> = table.iter().map(|r| r.id.clone()).collect();

    let mut tests: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut code: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unknown = BTreeSet::new();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    // The suites, their modules and their shared helpers; the other folders under tests/ are
    // fixtures.
    for entry in std::fs::read_dir(root.join("tests")).unwrap() {
        let p = entry.unwrap().path();
        // This file's own examples are not citations.
        if p.extension().is_some_and(|e| e == "rs") && !p.ends_with("requirements.rs") {
            files.push(p);
        } else if p.is_dir() && p.with_extension("rs").is_file() {
            // A suite's own modules (tests/fapi/ beside tests/fapi.rs).
            rust_files(&p, &mut files);
        }
    }
    rust_files(&root.join("tests/support/src"), &mut files);
    files.sort();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let in_tests = rel.starts_with("tests/");
        let module = rel
            .trim_start_matches("tests/support/src/")
            .trim_start_matches("tests/")
            .trim_end_matches(".rs")
            .trim_end_matches("/mod")
            .replace('/', "::");
        let mut current: Option<String> = None;
        // The ids of a doc comment (`///`) belong to the function it documents, which follows.
        let mut documented: Vec<String> = Vec::new();
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            if let Some(name) = fn_name(line) {
                current = Some(name.to_owned());
                for id in ids_in_name(name, &known)
                    .into_iter()
                    .chain(documented.drain(..))
                {
                    tests
                        .entry(id)
                        .or_default()
                        .insert(format!("{module}::{name}"));
                }
            }
            let doc = line.trim_start().starts_with("///");
            for id in ids_in_text(line) {
                if !known.contains(&id) {
                    unknown.insert(format!("{id} in {rel}"));
                    continue;
                }
                if in_tests && doc {
                    documented.push(id);
                } else if in_tests {
                    let at = match &current {
                        Some(f) => format!("{module}::{f}"),
                        None => module.clone(),
                    };
                    tests.entry(id).or_default().insert(at);
                } else {
                    code.entry(id).or_default().insert(rel.clone());
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "ids cited that the checklist in {DOC} does not have: {unknown:?}"
    );

    let list = |set: Option<&BTreeSet<String>>| match set {
        Some(s) if !s.is_empty() => s
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "—".to_owned(),
    };
    let mut fresh = preamble;
    fresh.push_str(HEADER);
    fresh.push_str("\n|---|---|---|---|---|---|---|\n");
    for r in &table {
        fresh.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.id,
            r.fixed[0],
            r.fixed[1],
            r.fixed[2],
            r.fixed[3],
            list(tests.get(&r.id)),
            list(code.get(&r.id)),
        ));
    }
    let cited = table.iter().filter(|r| tests.contains_key(&r.id)).count();
    fresh.push_str(&format!(
        "\n{cited} of {} requirements are cited by at least one test.\n",
        table.len()
    ));

    if std::env::var_os("CIBA_BLESS").is_some() {
        std::fs::write(root.join(DOC), &fresh).unwrap();
        return;
    }
    if fresh != committed {
        let diff: Vec<_> = fresh
            .lines()
            .zip(committed.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .collect();
        panic!(
            "{DOC} is out of date with the code; run `CIBA_BLESS=1 cargo test --test requirements` and commit the result. First differences (fresh, committed): {diff:#?}"
        );
    }
}

#[test]
fn names_cite_the_ids_they_spell() {
    let known: BTreeSet<String> = ["BC-REQ-04", "BC-REQ-05", "OA-03", "BC-ERR-02", "TOK-03"]
        .map(String::from)
        .into();
    assert_eq!(
        ids_in_name("bc_req_04_05_requested_expiry", &known),
        ["BC-REQ-04", "BC-REQ-05"]
    );
    assert_eq!(
        ids_in_name("oa_03_bc_err_02_basic_auth", &known),
        ["OA-03", "BC-ERR-02"]
    );
    assert!(ids_in_name("token_03", &known).is_empty());
    assert_eq!(
        ids_in_text("// TOK-03: single use (BC-REQ-02)."),
        ["TOK-03", "BC-REQ-02"]
    );
    assert!(ids_in_text("HTTP-2 utf-08 A-1").is_empty());
}
