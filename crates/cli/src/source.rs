//! Reading a config file without trusting it: a size cap (`/dev/zero`, or a
//! file that became a link to it, must not take the machine's memory) and a
//! nesting cap checked before the YAML parser, whose time grows with the
//! square of the depth.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A gateway config is kilobytes; 500 deployments are about 40 KB.
pub const MAX_BYTES: u64 = 16 << 20;
/// Nesting levels a config may have; the schema needs fewer than 10.
pub const MAX_DEPTH: usize = 64;

/// The text of `path`, at most [`MAX_BYTES`] of UTF-8.
pub fn read_capped(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BYTES {
        bail!("it is larger than {} MiB", MAX_BYTES >> 20);
    }
    String::from_utf8(bytes).context("it is not UTF-8 text")
}

/// A config's text, refused when it nests deeper than [`MAX_DEPTH`].
pub fn read_config(path: &Path) -> Result<String> {
    let mut text =
        read_capped(path).with_context(|| format!("cannot read config {}", path.display()))?;
    // A byte order mark (Windows editors write one) is not part of the YAML.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    if let Some(line) = too_deep(&text) {
        bail!(
            "{}:{line}: nests deeper than {MAX_DEPTH} levels; a gateway config needs fewer than 10",
            path.display()
        );
    }
    Ok(text)
}

/// The first line (1-based) where flow brackets or block indentation go
/// deeper than [`MAX_DEPTH`]. Brackets inside quotes and comments count
/// too: an over-estimate that only a config no one writes would meet.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        if indent > 2 * MAX_DEPTH {
            return Some(n + 1);
        }
        for c in line.bytes() {
            match c {
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_DEPTH {
                return Some(n + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_or_block_nesting_is_refused() {
        let flow = format!("a: {}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(too_deep(&flow), Some(1));
        let block: String = (0..70)
            .map(|d| format!("{}k{d}:\n", "  ".repeat(d)))
            .collect();
        assert!(too_deep(&block).is_some());
    }

    #[test]
    fn an_ordinary_config_is_not() {
        let text = "model_providers:\n  - model: a/b\n    retry_policy: { on_status_codes: [{ codes: [429] }] }\n";
        assert_eq!(too_deep(text), None);
    }
}
