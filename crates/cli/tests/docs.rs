//! The docs against the code, through the real binary: the generated
//! reference pages are what the generator writes now, every YAML config in
//! the docs passes `planoai validate`, and no page sends a reader outside
//! the repository or keeps history (that is CHANGELOG.md's job).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn planoai(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_planoai"))
        .args(args)
        .current_dir(dir)
        .env("PLANO_HOME", dir.join("home"))
        .output()
        .expect("run planoai")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("planoai-docs-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// README.md, CONTRIBUTING.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    let root = Path::new(WORKSPACE);
    let mut found = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    walk(&root.join("docs"), &mut found);
    found.sort();
    found
}

fn short(path: &Path) -> String {
    path.strip_prefix(WORKSPACE)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn generated(page: &str, file: &str) {
    let dir = scratch(page);
    let out = planoai(&["reference", page], &dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = String::from_utf8(out.stdout).unwrap();
    let committed = fs::read_to_string(Path::new(WORKSPACE).join(file)).unwrap();
    assert!(
        now == committed,
        "{file} is stale: run `make reference` and commit it"
    );
}

#[test]
fn the_config_reference_is_what_the_schema_says_now() {
    generated("config", "docs/reference/config.md");
}

#[test]
fn the_cli_reference_is_what_the_help_says_now() {
    generated("cli", "docs/reference/cli.md");
}

/// Each ```yaml block, with the page and line it starts on.
fn yaml_blocks(page: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(page).unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match open.as_mut() {
            None if line.trim_start() == "```yaml" => open = Some((n + 1, String::new())),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.push(open.take().unwrap()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(
        open.is_none(),
        "{}: a ```yaml block is never closed",
        short(page)
    );
    blocks
}

#[test]
fn every_yaml_config_in_the_docs_passes_validate() {
    let dir = scratch("examples");
    let mut checked = 0;
    let mut failed = Vec::new();
    for page in pages() {
        for (line, body) in yaml_blocks(&page) {
            // A config that names certificate files finds them beside it,
            // as a reader's own would be.
            for word in body.split_whitespace() {
                let name = word.trim_matches(|c: char| c == ',' || c == '}' || c == '{');
                if name.ends_with(".pem") {
                    fs::write(dir.join(name), "").unwrap();
                }
            }
            fs::write(dir.join("example.yaml"), &body).unwrap();
            let out = planoai(&["validate", "example.yaml"], &dir);
            checked += 1;
            if out.status.code() != Some(0) {
                failed.push(format!(
                    "{}:{line}:\n{}",
                    short(&page),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} YAML configs found in the docs"
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_link_stays_in_the_repository_and_finds_its_file() {
    let mut problems = Vec::new();
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("](") {
                rest = &rest[at + 2..];
                let target = rest.split(')').next().unwrap_or("");
                let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
                if target.starts_with("http") {
                    continue;
                }
                let path = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(file)
                };
                let inside = path
                    .canonicalize()
                    .is_ok_and(|p| p.starts_with(Path::new(WORKSPACE).canonicalize().unwrap()));
                if !inside {
                    problems.push(format!("{}:{}: {target}", short(&page), n + 1));
                } else if !fragment.is_empty() && !anchors(&path).contains(&fragment.to_string()) {
                    problems.push(format!("{}:{}: no anchor {target}", short(&page), n + 1));
                }
            }
            if line.contains("../shared") || line.contains("SPEC §") {
                problems.push(format!(
                    "{}:{}: points outside: {line}",
                    short(&page),
                    n + 1
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The anchors a link can name in a page: its headings as GitHub writes
/// them, and its explicit `<a id="...">`s.
fn anchors(page: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(page) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')) {
            found.push(
                title
                    .trim()
                    .to_lowercase()
                    .chars()
                    .filter_map(|c| match c {
                        ' ' => Some('-'),
                        c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                        _ => None,
                    })
                    .collect(),
            );
        }
        if let Some(rest) = line.strip_prefix("<a id=\"") {
            found.extend(rest.split('"').next().map(str::to_string));
        }
    }
    found
}

/// Issue numbers and dated runs belong in CHANGELOG.md; a page says what is.
#[test]
fn history_stays_in_the_changelog() {
    let mut problems = Vec::new();
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        let mut fenced = false;
        for (n, line) in text.lines().enumerate() {
            // Code is quoted, not told: an API version's date is no history.
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
            if fenced {
                continue;
            }
            let words: Vec<&str> = prose.split_whitespace().collect();
            let issue = words.windows(2).any(|w| {
                matches!(w[0].to_ascii_lowercase().as_str(), "issue" | "issues")
                    && w[1].chars().next().is_some_and(|c| c.is_ascii_digit())
            });
            let dated = words.iter().any(|w| {
                let w = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
                w.len() == 10
                    && w.starts_with("20")
                    && w.as_bytes()[4] == b'-'
                    && w.as_bytes()[7] == b'-'
            });
            if issue || dated {
                problems.push(format!("{}:{}: {line}", short(&page), n + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
