//! The crate's modules depend on each other one way only (docs/architecture.md): at the top
//! (runtimes → adapters → engine → components → config and protocol) and among the files of
//! each module (the engine's flows, the store's backends, …). A `crate::…` or `super::…` path in
//! code (not in a comment, not in a unit-test module) is a dependency on the module it names;
//! any cycle among sibling modules, of any length, fails this test with the lines that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module by its path from the crate root: `["engine", "approval"]`.
type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a source file is: `engine/mod.rs` → `engine`, `engine/token.rs` →
/// `engine::token`, `lib.rs` → the root.
fn module_of(rel: &Path) -> Module {
    let mut m: Module = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_str()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib")) {
        m.pop();
    }
    m
}

/// The code of a file without comments, string and char literals, and `#[cfg(test)]` items
/// (a unit-test module may reach anywhere), each remaining char with its line number.
fn code(text: &str) -> Vec<(char, usize)> {
    // Comments and literals out first, so that braces inside them are not counted below.
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    let mut plain = Vec::new();
    let (mut i, mut line) = (0, 1);
    let skip_to = |i: &mut usize, line: &mut usize, end: &dyn Fn(usize) -> Option<usize>| {
        while *i < chars.len() {
            if let Some(len) = end(*i) {
                *i += len;
                return;
            }
            *line += usize::from(chars[*i] == '\n');
            *i += 1;
        }
    };
    while i < chars.len() {
        if at(i, "//") {
            skip_to(&mut i, &mut line, &|j| (chars[j] == '\n').then_some(0));
        } else if at(i, "/*") {
            skip_to(&mut i, &mut line, &|j| at(j, "*/").then_some(2));
        } else if at(i, "r#\"") {
            i += 3;
            skip_to(&mut i, &mut line, &|j| at(j, "\"#").then_some(2));
        } else if chars[i] == '"' {
            i += 1;
            let escaped = |j: usize| {
                let mut k = j;
                let mut n = 0;
                while k > 0 && chars[k - 1] == '\\' {
                    n += 1;
                    k -= 1;
                }
                n % 2 == 1
            };
            skip_to(&mut i, &mut line, &|j| {
                (chars[j] == '"' && !escaped(j)).then_some(1)
            });
        } else if chars[i] == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3; // 'x'
        } else if chars[i] == '\'' && chars.get(i + 1) == Some(&'\\') {
            i += 2;
            skip_to(&mut i, &mut line, &|j| (chars[j] == '\'').then_some(1));
        } else {
            line += usize::from(chars[i] == '\n');
            plain.push((chars[i], line - usize::from(chars[i] == '\n')));
            i += 1;
        }
    }
    // Then every `#[cfg(test)]` item: up to its `;` or its closing brace; or, for a field or a
    // statement inside braces, up to the `,` or the `}` that ends it.
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < plain.len() {
        if plain[i..]
            .iter()
            .take(marker.len())
            .map(|c| c.0)
            .eq(marker.iter().copied())
        {
            let mut depth = 0usize;
            i += marker.len();
            while i < plain.len() {
                match plain[i].0 {
                    '{' | '(' | '[' => depth += 1,
                    '}' | ')' | ']' if depth == 0 => break,
                    '}' | ')' | ']' => {
                        depth -= 1;
                        if depth == 0 && plain[i].0 == '}' {
                            i += 1;
                            break;
                        }
                    }
                    ';' | ',' if depth == 0 => {
                        i += 1;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
        } else {
            out.push(plain[i]);
            i += 1;
        }
    }
    out
}

fn ident_at(code: &[(char, usize)], mut i: usize) -> (String, usize) {
    let mut s = String::new();
    while i < code.len() && (code[i].0.is_ascii_alphanumeric() || code[i].0 == '_') {
        s.push(code[i].0);
        i += 1;
    }
    (s, i)
}

/// The paths named after a `crate::` or `super::` at `i`: one, or each item of a `{…}` group.
fn paths_at(code: &[(char, usize)], i: usize) -> Vec<Vec<String>> {
    let mut path = Vec::new();
    let mut i = i;
    loop {
        let (seg, next) = ident_at(code, i);
        if seg.is_empty() {
            if code.get(i).map(|c| c.0) == Some('{') {
                // A group: every item's path, after the prefix so far.
                let mut out = Vec::new();
                let mut j = i + 1;
                let mut depth = 1;
                let mut start = j;
                while j < code.len() && depth > 0 {
                    match code[j].0 {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if (code[j].0 == ',' && depth == 1) || depth == 0 {
                        let item: String = code[start..j].iter().map(|c| c.0).collect();
                        let item = item.trim();
                        if !item.is_empty() && !item.starts_with("self") {
                            let mut p = path.clone();
                            p.extend(
                                item.split("::")
                                    .map(|s| s.trim().trim_start_matches('{').to_owned())
                                    .take_while(|s| {
                                        !s.is_empty()
                                            && s.chars()
                                                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                                    }),
                            );
                            out.push(p);
                        }
                        start = j + 1;
                    }
                    j += 1;
                }
                return out;
            }
            return vec![path];
        }
        path.push(seg);
        if code.get(next).map(|c| c.0) == Some(':') && code.get(next + 1).map(|c| c.0) == Some(':')
        {
            i = next + 2;
        } else {
            return vec![path];
        }
    }
}

type Edges = BTreeMap<(Module, String, String), String>;

/// Every cycle among sibling modules (a strongly connected component of more than one), as
/// the edges that make it.
fn cycles(edges: &Edges) -> Vec<String> {
    let mut cycles = Vec::new();
    let parents: BTreeSet<&Module> = edges.keys().map(|(p, _, _)| p).collect();
    for parent in parents {
        let next = |a: &str| -> Vec<&str> {
            edges
                .keys()
                .filter(|(p, f, _)| p == parent && f == a)
                .map(|(_, _, t)| t.as_str())
                .collect()
        };
        let nodes: BTreeSet<&str> = edges
            .keys()
            .filter(|(p, _, _)| p == parent)
            .flat_map(|(_, f, t)| [f.as_str(), t.as_str()])
            .collect();
        let reach = |from: &str| -> BTreeSet<&str> {
            let mut seen = BTreeSet::new();
            let mut todo = vec![from];
            while let Some(n) = todo.pop() {
                for m in next(n) {
                    if seen.insert(m) {
                        todo.push(m);
                    }
                }
            }
            seen
        };
        let mut done = BTreeSet::new();
        for &n in &nodes {
            if done.contains(n) {
                continue;
            }
            let forward = reach(n);
            let component: BTreeSet<&str> = forward
                .iter()
                .copied()
                .filter(|m| reach(m).contains(n))
                .collect();
            if component.contains(n) && component.len() > 1 {
                let at: Vec<String> = edges
                    .iter()
                    .filter(|((p, f, t), _)| {
                        p == parent
                            && component.contains(f.as_str())
                            && component.contains(t.as_str())
                    })
                    .map(|((_, f, t), at)| format!("{f} → {t} ({at})"))
                    .collect();
                cycles.push(format!(
                    "in crate::{}: {}",
                    parent.join("::"),
                    at.join(", ")
                ));
            }
            done.extend(component);
            done.insert(n);
        }
    }
    cycles
}

#[test]
fn no_cycle_among_sibling_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Module> = files
        .iter()
        .map(|f| module_of(f.strip_prefix(&src).unwrap()))
        .filter(|m| !m.is_empty() && m[0] != "main")
        .collect();
    // The longest known module a path from `from` names (`None`: an item, not a module).
    let resolve = |from: &Module, path: &[String], relative: bool| -> Option<Module> {
        let mut full: Module = if relative {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let base = &from[..from.len().checked_sub(ups)?];
            base.iter().chain(&path[ups..]).cloned().collect()
        } else {
            path.to_vec()
        };
        while !full.is_empty() {
            if modules.contains(&full) {
                return Some(full);
            }
            full.pop();
        }
        None
    };
    // Edges between siblings: (parent, from child, to child) → where.
    let mut edges = Edges::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let from = module_of(rel);
        if !modules.contains(&from) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let code = code(&text);
        let mut i = 0;
        while i < code.len() {
            let prefix = ["crate::", "super::"].into_iter().find(|p| {
                p.chars()
                    .enumerate()
                    .all(|(k, c)| code.get(i + k).map(|x| x.0) == Some(c))
                    && (i == 0 || !(code[i - 1].0.is_ascii_alphanumeric() || code[i - 1].0 == '_'))
            });
            let Some(prefix) = prefix else {
                i += 1;
                continue;
            };
            let line = code[i].1;
            let after = i + prefix.len();
            for mut path in paths_at(&code, after) {
                let relative = prefix == "super::";
                if relative {
                    path.insert(0, "super".into());
                }
                let Some(to) = resolve(&from, &path, relative) else {
                    continue;
                };
                // The edge between the children of the deepest common ancestor; none when one
                // module contains the other.
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue;
                }
                edges
                    .entry((
                        from[..common].to_vec(),
                        from[common].clone(),
                        to[common].clone(),
                    ))
                    .or_insert_with(|| format!("{}:{line}", rel.display()));
            }
            i = after;
        }
    }
    let cycles = cycles(&edges);
    assert!(cycles.is_empty(), "cycles: {cycles:#?}");
    // The checker sees dependencies at the top and inside modules (it would pass vacuously
    // otherwise), through `crate::`, `super::` and grouped imports alike.
    let has = |parent: &[&str], f: &str, t: &str| {
        let parent: Module = parent.iter().map(|s| s.to_string()).collect();
        edges.contains_key(&(parent, f.to_owned(), t.to_owned()))
    };
    assert!(has(&[], "engine", "store"));
    assert!(has(&["engine"], "token", "issue"));
    assert!(has(&["engine"], "approval", "upstream_login"));
}

#[test]
fn a_cycle_of_three_is_found_and_a_chain_is_not() {
    let edge = |f: &str, t: &str| {
        (
            (vec!["engine".to_owned()], f.to_owned(), t.to_owned()),
            format!("{f}.rs:1"),
        )
    };
    let chain: Edges = [edge("a", "b"), edge("b", "c"), edge("d", "c")]
        .into_iter()
        .collect();
    assert!(cycles(&chain).is_empty());
    let mut cycle = chain.clone();
    cycle.extend([edge("c", "a")]);
    let found = cycles(&cycle);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("in crate::engine: a → b"), "{found:?}");
    assert!(!found[0].contains('d'), "{found:?}");
}

#[test]
fn the_parser_reads_groups_and_skips_comments_strings_and_unit_tests() {
    let code = code(
        "use super::{a::X, b};\n// crate::c\nfn f() { crate::d::y(\"crate::s\"); }\n#[cfg(test)]\nmod tests { use crate::e; }\nuse crate::f;\n",
    );
    let mut found = Vec::new();
    let mut i = 0;
    while i + 7 < code.len() {
        let s: String = code[i..i + 7].iter().map(|c| c.0).collect();
        if s == "super::" || s == "crate::" {
            found.extend(paths_at(&code, i + 7));
        }
        i += 1;
    }
    let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(names, ["a::X", "b", "d::y", "f"]);
}
