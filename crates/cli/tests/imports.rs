//! No crate's module imports form a circle (docs/architecture.md, Layers).
//! A module is a file (`x.rs` or `x/mod.rs`); it imports another when it
//! names it through `crate::` or `super::` (in a `use` or in a path), and
//! a module's own children do not count (a parent and its private parts
//! are one). Unit tests (`tests.rs`, and a file's `#[cfg(test)] mod tests`
//! with all after it: it is the last item of a file here) are left out.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Module = Vec<String>;

/// The crate's modules under `src`, each with its code (comments and unit
/// tests left out).
fn modules(src: &Path) -> BTreeMap<Module, String> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<Module, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, src, out);
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap();
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .iter()
                .map(|s| s.to_str().unwrap().to_string())
                .collect();
            if ["mod", "lib", "main"].contains(&module.last().unwrap().as_str()) {
                module.pop();
            }
            out.insert(module, code(&fs::read_to_string(&path).unwrap()));
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a `use` body names, its groups expanded: `a::{b, c::d}`.
fn expand(prefix: &str, body: &str, out: &mut Vec<String>) {
    let body = body.trim();
    if let (Some(open), true) = (body.find('{'), body.ends_with('}')) {
        let head = body[..open].trim_end_matches(':');
        let prefix = format!("{prefix}{head}::");
        let (mut depth, mut from) = (0, open + 1);
        for (i, c) in body.char_indices().skip(open + 1) {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                ',' | '}' if depth == 0 => {
                    if !body[from..i].trim().is_empty() {
                        expand(&prefix, &body[from..i], out);
                    }
                    from = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let body = body.split(" as ").next().unwrap().trim();
    out.push(format!("{prefix}{body}"));
}

/// Every `crate::`/`super::` path in `code`, and the bodies of its `use`s.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("use ") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + 4..];
        if let Some(end) = rest.find(';') {
            expand("", &rest[..end], &mut out);
        }
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        for (i, _) in code.match_indices(start) {
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || b"_:".contains(&bytes[i - 1])) {
                continue;
            }
            let end = code[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| i + e);
            out.push(code[i..end].to_string());
        }
    }
    out
}

/// The module `path` names from `module`: its longest prefix that is one.
fn resolve(path: &str, module: &Module, known: &BTreeMap<Module, String>) -> Option<Module> {
    let mut segments = path.split("::").map(str::trim).filter(|s| !s.is_empty());
    let mut full: Module = match segments.next()? {
        "crate" => Vec::new(),
        "super" => module[..module.len().saturating_sub(1)].to_vec(),
        "self" => module.clone(),
        _ => return None,
    };
    for s in segments {
        match s {
            "super" => {
                full.pop();
            }
            "self" | "*" => {}
            s => full.push(s.to_string()),
        }
    }
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| known.contains_key(m))
}

/// The circles of `crate_dir`'s module imports, each as its modules' names.
fn circles(crate_dir: &str) -> Vec<BTreeSet<String>> {
    circles_in(&Path::new(common::WORKSPACE).join(crate_dir).join("src"))
}

/// The circles of the module imports of the crate whose sources are `src`.
fn circles_in(src: &Path) -> Vec<BTreeSet<String>> {
    let known = modules(src);
    let mut edges: BTreeMap<&Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in &known {
        for path in paths(code) {
            let Some(to) = resolve(&path, module, &known) else {
                continue;
            };
            // A module and its own parts (either way round) are one.
            if to.starts_with(module) || module.starts_with(&to) {
                continue;
            }
            edges.entry(module).or_default().insert(to);
        }
    }
    // Reachability, then the modules that reach each other.
    let reach = |from: &Module| -> BTreeSet<Module> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&Module, BTreeSet<Module>> =
        known.keys().map(|m| (m, reach(m))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (m, r) in &reached {
        if !r.contains(*m) {
            continue;
        }
        let circle: BTreeSet<String> = r
            .iter()
            .filter(|o| reached[o].contains(*m))
            .map(|o| o.join("::"))
            .collect();
        if !found.contains(&circle) {
            found.push(circle);
        }
    }
    found
}

#[test]
fn no_crate_imports_in_a_circle() {
    for crate_dir in ["crates/core", "crates/cli", "crates/filter"] {
        let circles = circles(crate_dir);
        assert!(
            circles.is_empty(),
            "{crate_dir}: import circles {circles:?}"
        );
    }
}

/// The check sees a circle: two modules that import each other, one by
/// `crate::` and one by `super::`, beside one that imports them both.
#[test]
fn the_check_sees_a_circle() {
    let src = std::env::temp_dir().join(format!("plano-imports-{}", std::process::id()));
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).unwrap();
    for (file, text) in [
        ("lib.rs", "mod above;\nmod a;\nmod b;\n"),
        ("above.rs", "use crate::{a::A, b::B};\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        ("b.rs", "pub struct B(super::a::A);\n"),
    ] {
        fs::write(src.join(file), text).unwrap();
    }
    let circles = circles_in(&src);
    let _ = fs::remove_dir_all(&src);
    let ab: BTreeSet<String> = ["a", "b"].map(String::from).into();
    assert_eq!(circles, [ab]);
}
