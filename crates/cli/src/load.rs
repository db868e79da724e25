//! Reads a gateway config: YAML errors and semantic problems alike come
//! back as diagnostics naming the line, the column and the field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plano_core::resolve::{self, Resolved, Severity};

use crate::diagnostics::Diagnostic;
use crate::locate::locate;
use crate::structure;

pub struct Loaded {
    pub path: PathBuf,
    pub resolved: Resolved,
}

pub struct Report {
    pub path: PathBuf,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
    pub loaded: Option<Loaded>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn print(&self) -> Result<()> {
        for d in &self.diagnostics {
            errln!("{}", d.render(&self.path, &self.source))?;
        }
        Ok(())
    }
}

/// Where `$VAR` keys come from, and what an unset one is.
pub struct Options {
    /// Read after the environment, before the `.env` beside the config.
    pub env_file: Option<PathBuf>,
    pub unset_variable: Severity,
}

impl Options {
    /// As `up` needs it: every key resolved.
    pub fn for_run() -> Options {
        Options {
            env_file: None,
            unset_variable: Severity::Error,
        }
    }
}

/// Loads and checks `path`. `Err` only when a file cannot be read.
pub fn load(path: &Path, options: &Options) -> Result<Report> {
    let source = crate::source::read_config(path)?;
    let env_file = match &options.env_file {
        Some(file) => read_env_file(file)
            .with_context(|| format!("cannot read the env file {}", file.display()))?,
        None => HashMap::new(),
    };
    let dotenv =
        read_env_file(&path.parent().unwrap_or(Path::new(".")).join(".env")).unwrap_or_default();
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| env_file.get(name).cloned())
            .or_else(|| dotenv.get(name).cloned())
    };
    let mut report = Report {
        path: path.to_path_buf(),
        source,
        diagnostics: Vec::new(),
        loaded: None,
    };
    let parsed = structure::parse(&report.source);
    let Some(config) = &parsed.config else {
        report.diagnostics = parsed.diagnostics;
        return Ok(report);
    };
    let (resolved, mut issues) = resolve::resolve_with(config, &env, options.unset_variable);
    let unreadable = unreadable_tls_files(path, resolved.as_ref());
    let resolved = resolved.filter(|_| unreadable.is_empty());
    issues.extend(unreadable);
    // A repaired config is only for finding the other problems, never to run.
    let resolved = resolved.filter(|_| parsed.diagnostics.is_empty());
    let issues: Vec<_> = issues
        .into_iter()
        .filter(|i| !parsed.is_repaired(&i.path))
        .collect();
    report.diagnostics = parsed.diagnostics;
    for issue in issues {
        let (line, column) = locate(&report.source, &issue.path);
        report.diagnostics.push(Diagnostic {
            severity: issue.severity,
            message: issue.message,
            line,
            column,
            field: issue.path,
            hint: issue.hint,
        });
    }
    report.loaded = resolved.map(|resolved| Loaded {
        path: path.to_path_buf(),
        resolved,
    });
    Ok(report)
}

/// `shared_state.tls` files that are not there to read (relative to the
/// config's directory), each at its field.
fn unreadable_tls_files(path: &Path, resolved: Option<&Resolved>) -> Vec<resolve::Issue> {
    let Some(tls) = resolved
        .and_then(|r| r.shared_state.as_ref())
        .and_then(|s| s.tls.as_ref())
    else {
        return Vec::new();
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    [
        ("ca_file", tls.ca_file.as_ref()),
        ("cert_file", tls.client.as_ref().map(|c| &c.0)),
        ("key_file", tls.client.as_ref().map(|c| &c.1)),
    ]
    .into_iter()
    .filter_map(|(field, file)| {
        let file = file?;
        let found = dir.join(file);
        let why = match std::fs::File::open(&found) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => return None,
            Ok(_) => "is not a file".to_string(),
            Err(e) => e.to_string(),
        };
        Some(resolve::Issue {
            severity: Severity::Error,
            path: format!("shared_state.tls.{field}"),
            message: format!("cannot read `{}`: {why}", found.display()),
            hint: Some("a PEM file, relative to the config's directory or absolute".into()),
        })
    })
    .collect()
}

/// The `KEY=VALUE` lines of an env file (`.env`).
fn read_env_file(file: &Path) -> Result<HashMap<String, String>> {
    let text = crate::source::read_capped(file)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect())
}

/// Loads `path` for running: prints every diagnostic, and fails on errors.
pub fn load_for_run(path: &Path) -> Result<Loaded> {
    let report = load(path, &Options::for_run())?;
    report.print()?;
    match report.loaded {
        Some(l) if report.errors() == 0 => Ok(l),
        _ => anyhow::bail!(
            "{} has {} error(s); nothing was started or changed",
            path.display(),
            report.errors().max(1)
        ),
    }
}
