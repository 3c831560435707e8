//! The crate's top-level modules depend on each other one way only (docs/architecture.md):
//! runtimes → adapters → engine → components → config and protocol. A `crate::x` path in code
//! (not in a comment, not in a test module) is a dependency; a pair of modules that reach into
//! each other fails this test with the lines that do it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a `crate::` path at `at` in `line` names.
fn named_module(line: &str, at: usize) -> &str {
    let rest = &line[at + "crate::".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn no_two_modules_depend_on_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap();
            first.trim_end_matches(".rs").to_owned()
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    // (from, to) → where.
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let from = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        if !modules.contains(&from) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap();
            let mut search = 0;
            while let Some(at) = line[search..].find("crate::") {
                let at = search + at;
                let to = named_module(line, at);
                if to != from && modules.contains(to) {
                    edges
                        .entry((from.clone(), to.to_owned()))
                        .or_insert_with(|| format!("{}:{}", rel.display(), n + 1));
                }
                search = at + "crate::".len();
            }
        }
    }
    let two_way: Vec<String> = edges
        .iter()
        .filter(|((a, b), _)| a < b && edges.contains_key(&(b.clone(), a.clone())))
        .map(|((a, b), at)| format!("{a} ↔ {b} ({at} and {})", edges[&(b.clone(), a.clone())]))
        .collect();
    assert!(two_way.is_empty(), "two-way dependencies: {two_way:#?}");
    // The checker sees dependencies at all (it would pass vacuously otherwise).
    assert!(edges.contains_key(&("engine".into(), "store".into())));
}
