//! Finds the line and column of a field path (`a[1].b.c[0]`) in YAML text.
//! serde_yaml keeps no positions once a document is parsed, so checks made
//! after parsing find their line here, by indentation. It covers the block
//! style and one-line flow sequences this config is written in.

pub enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

pub fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(n) = rest[1..end].parse() {
                out.push(Segment::Index(n));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// 1-based (line, column) of the deepest part of `path` that was found.
pub fn locate(text: &str, path: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = (1, 1);
    // The block being searched: lines from `start`, deeper than `parent`.
    let mut start = 0usize;
    let mut parent: isize = -1;
    // When inside a sequence item, the column of its dash.
    let mut item_dash: Option<usize> = None;
    // A flow sequence `[a, b]` on the key's own line.
    let mut flow: Option<usize> = None;

    for seg in segments(path) {
        match seg {
            Segment::Key(key) => {
                let mut hit = None;
                for (i, line) in lines.iter().enumerate().skip(start) {
                    if is_blank(line) {
                        continue;
                    }
                    let ind = indent(line);
                    let content = line.trim_start();
                    let (key_col, rest) = match content.strip_prefix("- ") {
                        Some(r) => (ind + 2 + (r.len() - r.trim_start().len()), r.trim_start()),
                        None => (ind, content),
                    };
                    if i > start {
                        if (key_col as isize) <= parent {
                            break;
                        }
                        if item_dash == Some(ind) && content.starts_with("- ") {
                            break;
                        }
                    }
                    if let Some(after) = rest.strip_prefix(key) {
                        if after.trim_start().starts_with(':') {
                            hit = Some((i, key_col, after));
                            break;
                        }
                    }
                }
                let Some((i, col, after)) = hit else {
                    return found;
                };
                found = (i + 1, col + 1);
                parent = col as isize;
                start = i + 1;
                item_dash = None;
                let value = after.trim_start().trim_start_matches(':').trim_start();
                flow = value.starts_with('[').then(|| line_offset(lines[i], value));
            }
            Segment::Index(n) => {
                if let Some(open) = flow.take() {
                    let line = lines[found.0 - 1];
                    found = (found.0, flow_item_column(line, open, n));
                    return found;
                }
                let mut dash: Option<usize> = None;
                let mut count = 0usize;
                let mut hit = None;
                for (i, line) in lines.iter().enumerate().skip(start) {
                    if is_blank(line) {
                        continue;
                    }
                    let ind = indent(line);
                    if (ind as isize) < parent
                        || (dash.is_none()
                            && (ind as isize) == parent
                            && !line.trim_start().starts_with("- "))
                    {
                        break;
                    }
                    if !line.trim_start().starts_with("- ") {
                        continue;
                    }
                    match dash {
                        None => dash = Some(ind),
                        Some(d) if ind < d => break,
                        Some(d) if ind > d => continue,
                        _ => {}
                    }
                    if count == n {
                        hit = Some((i, ind));
                        break;
                    }
                    count += 1;
                }
                let Some((i, ind)) = hit else {
                    return found;
                };
                found = (i + 1, ind + 3);
                start = i;
                parent = ind as isize;
                item_dash = Some(ind);
            }
        }
    }
    found
}

fn line_offset(line: &str, tail: &str) -> usize {
    line.len() - tail.len()
}

/// Column (1-based) of item `n` of the flow sequence opening at `open`.
fn flow_item_column(line: &str, open: usize, n: usize) -> usize {
    let mut item = 0;
    let mut depth = 0;
    let bytes = line.as_bytes();
    let mut i = open + 1;
    let mut item_start = i;
    while i < bytes.len() {
        match bytes[i] {
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth > 0 => depth -= 1,
            b']' => break,
            b',' if depth == 0 => {
                if item == n {
                    break;
                }
                item += 1;
                item_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let skip = line[item_start..].len() - line[item_start..].trim_start().len();
    item_start + skip + 1
}

#[cfg(test)]
mod tests {
    use super::locate;

    const DOC: &str = "version: v0.3.0
listeners:
  - type: model
    port: 12000
model_providers:
  - model: openai/gpt-4o
    default: true
    retry_policy:
      fallback_models: [anthropic/claude, mistral/large]
      on_status_codes:
        - codes: [429, \"502-504\"]
          strategy: same_model
      backoff:
        apply_to: global
        base_ms: 0
  - model: anthropic/claude
    base_url: http://x
";

    #[test]
    fn finds_nested_fields() {
        assert_eq!(
            locate(DOC, "model_providers[0].retry_policy.backoff.base_ms"),
            (15, 9)
        );
        assert_eq!(locate(DOC, "model_providers[1].base_url"), (17, 5));
        assert_eq!(
            locate(
                DOC,
                "model_providers[0].retry_policy.on_status_codes[0].strategy"
            ),
            (12, 11)
        );
        assert_eq!(locate(DOC, "listeners[0].port"), (4, 5));
        assert_eq!(locate(DOC, "model_providers[1].model"), (16, 5));
    }

    #[test]
    fn finds_flow_items() {
        assert_eq!(
            locate(DOC, "model_providers[0].retry_policy.fallback_models[1]"),
            (9, 43)
        );
        assert_eq!(
            locate(
                DOC,
                "model_providers[0].retry_policy.on_status_codes[0].codes[1]"
            ),
            (11, 24)
        );
    }

    #[test]
    fn a_missing_field_points_at_its_parent() {
        assert_eq!(locate(DOC, "model_providers[1].retry_policy"), (16, 5));
    }
}
