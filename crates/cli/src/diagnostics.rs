//! Config problems printed the way rustc prints them: what is wrong, where
//! (file:line:column), the line itself with a caret, the field and a hint.

use std::fmt::Write;
use std::path::Path;

use plano_core::resolve::Severity;

/// Characters of a config line printed under a diagnostic.
const MAX_SHOWN: usize = 200;

pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field: `model_providers[0].retry_policy.backoff`.
    pub field: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn render(&self, file: &Path, source: &str) -> String {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = format!("{label}: {}\n", self.message);
        let gutter = " ".repeat(self.line.to_string().len());
        let _ = writeln!(
            out,
            "{gutter}--> {}:{}:{}",
            file.display(),
            self.line,
            self.column
        );
        let line = source.lines().nth(self.line.saturating_sub(1));
        let start = self.column.saturating_sub(1);
        // A line of megabytes (a pasted blob) is not printed whole.
        if let Some(text) = line.filter(|_| start < MAX_SHOWN) {
            let text = match text.char_indices().nth(MAX_SHOWN) {
                Some((cut, _)) => &text[..cut],
                None => text,
            };
            let width = text
                .get(start..)
                .map(|rest| {
                    rest.find([':', ',', ']', '#'])
                        .unwrap_or(rest.trim_end().len())
                })
                .unwrap_or(1)
                .max(1);
            let cut = if text.len() < line.map_or(0, str::len) {
                " ..."
            } else {
                ""
            };
            let _ = writeln!(out, "{gutter} |");
            let _ = writeln!(
                out,
                "{} | {}{cut}",
                self.line,
                shown(text, &self.field, start)
            );
            let _ = writeln!(out, "{gutter} | {}{}", " ".repeat(start), "^".repeat(width));
        }
        if !self.field.is_empty() {
            let _ = writeln!(out, "{gutter} = field: {}", self.field);
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "{gutter} = help: {hint}");
        }
        out
    }
}

/// A config line as printed: the value of a key field at `start` (a literal
/// key, in this line) is not shown.
fn shown(line: &str, field: &str, start: usize) -> String {
    if !(field.ends_with("access_key") || field.ends_with(".key")) {
        return line.to_string();
    }
    let Some(colon) = line.get(start..).and_then(|rest| rest.find(':')) else {
        return line.to_string();
    };
    let from = start + colon + 1;
    let to = line[from..]
        .find([',', '}'])
        .map_or(line.len(), |e| from + e);
    format!("{} [redacted]{}", &line[..from], &line[to..])
}
