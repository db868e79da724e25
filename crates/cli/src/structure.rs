//! Every structural problem of a config in one run. serde stops at the first
//! wrong type, unknown field or value, or missing field; so each error found
//! is reported, then repaired in a plain YAML copy of the document (an
//! unknown field dropped, a bad or missing value replaced by a stand-in) and
//! the copy read again, until it reads. The semantic checks then run on the
//! repaired config; what they say about a repaired field is left out.

use plano_core::config::GatewayConfig;
use plano_core::resolve::{closest, Severity};
use serde_yaml::{Mapping, Value};

use crate::diagnostics::Diagnostic;
use crate::locate::{locate, segments, Segment};

/// More mistakes than this in one file, and the rest wait for the next run.
const MAX_REPAIRS: usize = 50;

pub struct Parsed {
    pub config: Option<GatewayConfig>,
    pub diagnostics: Vec<Diagnostic>,
    /// Field paths that hold stand-ins, not what the user wrote.
    pub repaired: Vec<String>,
}

impl Parsed {
    /// Whether `path` is, or is inside, a repaired field.
    pub fn is_repaired(&self, path: &str) -> bool {
        self.repaired.iter().any(|r| {
            path == r
                || path
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }
}

pub fn parse(source: &str) -> Parsed {
    let mut parsed = Parsed {
        config: None,
        diagnostics: Vec::new(),
        repaired: Vec::new(),
    };
    let first = match serde_yaml::from_str::<GatewayConfig>(source) {
        Ok(config) => {
            parsed.config = Some(config);
            return parsed;
        }
        Err(e) => e,
    };
    // The first error has its exact place.
    let first_diagnostic = yaml_diagnostic(&first, source);
    let in_a_field = !first_diagnostic.field.is_empty();
    parsed.diagnostics.push(first_diagnostic);
    let mut value = match serde_yaml::from_str::<Value>(source) {
        Ok(v) if !source.trim().is_empty() => v,
        Ok(_) => return parsed,
        // A syntax error ends it: nothing after it can be read. It was the
        // first error, unless that one was in a field before it.
        Err(e) => {
            if in_a_field {
                parsed.diagnostics.push(yaml_diagnostic(&e, source));
            }
            return parsed;
        }
    };
    let mut error = first;
    for _ in 0..MAX_REPAIRS {
        let (path, message) = split(&error);
        let fixed = match message.strip_prefix("unknown field `") {
            Some(rest) => {
                let name = rest.split('`').next().unwrap_or_default();
                remove(&mut value, &join(&path, name))
            }
            None => {
                let target = match message.strip_prefix("missing field `") {
                    Some(rest) => join(&path, rest.split('`').next().unwrap_or_default()),
                    None => path,
                };
                let ok = stand_in(&mut value, &target);
                parsed.repaired.push(target);
                ok
            }
        };
        if !fixed {
            return parsed;
        }
        match read(&value) {
            Ok(config) => {
                parsed.config = Some(config);
                return parsed;
            }
            Err(next) => {
                let mut d = yaml_diagnostic(&next, source);
                (d.line, d.column) = locate(source, &d.field);
                parsed.diagnostics.push(d);
                error = next;
            }
        }
    }
    parsed
}

fn read(value: &Value) -> Result<GatewayConfig, serde_yaml::Error> {
    // Through text, so that errors carry the field's path.
    serde_yaml::from_str(&serde_yaml::to_string(value).unwrap_or_default())
}

/// `(path, message)` of serde_yaml's `path: message at line L column C`.
fn split(e: &serde_yaml::Error) -> (String, String) {
    let text = e.to_string();
    let text = text
        .rfind(" at line ")
        .map_or(text.as_str(), |i| &text[..i]);
    match text.split_once(": ") {
        Some((path, msg)) if !path.contains(' ') && path != "." => (path.into(), msg.into()),
        Some((".", msg)) => (String::new(), msg.into()),
        _ => (String::new(), text.into()),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The node at `path`'s parent, and the last segment.
fn parent<'v, 'p>(value: &'v mut Value, path: &'p str) -> Option<(&'v mut Value, Segment<'p>)> {
    let mut segs = segments(path);
    let last = segs.pop()?;
    let mut node = value;
    for seg in segs {
        node = match seg {
            Segment::Key(k) => node.get_mut(k)?,
            Segment::Index(i) => node.get_mut(i)?,
        };
    }
    Some((node, last))
}

fn remove(value: &mut Value, path: &str) -> bool {
    match parent(value, path) {
        Some((Value::Mapping(m), Segment::Key(k))) => m.remove(k).is_some(),
        _ => false,
    }
}

fn put(value: &mut Value, path: &str, new: Value) -> bool {
    match parent(value, path) {
        Some((Value::Mapping(m), Segment::Key(k))) => {
            m.insert(Value::String(k.into()), new);
            true
        }
        Some((Value::Sequence(s), Segment::Index(i))) if i < s.len() => {
            s[i] = new;
            true
        }
        _ => false,
    }
}

/// Puts at `path` the first value of a few kinds that reads there; for an
/// enum, the first of the values its error lists.
fn stand_in(value: &mut Value, path: &str) -> bool {
    let mut candidates = vec![
        Value::String("x".into()),
        Value::Number(1.into()),
        Value::Sequence(Vec::new()),
        Value::Mapping(Mapping::new()),
        Value::Bool(false),
    ];
    let mut tried = 0;
    while let Some(candidate) = (!candidates.is_empty() && tried < 10).then(|| candidates.remove(0))
    {
        tried += 1;
        if !put(value, path, candidate) {
            return false;
        }
        match read(value) {
            Ok(_) => return true,
            Err(e) => {
                let (at, message) = split(&e);
                if at != path && !at.starts_with(&format!("{path}.")) {
                    return true; // this field reads; the error is another's
                }
                if let Some(option) = message.split('`').nth(3) {
                    if message.starts_with("unknown variant") {
                        candidates.insert(0, Value::String(option.into()));
                    }
                }
            }
        }
    }
    false
}

/// serde_yaml says `path: message at line L column C`; split that into parts
/// and suggest the closest field name for an unknown one.
pub fn yaml_diagnostic(e: &serde_yaml::Error, source: &str) -> Diagnostic {
    let text = e.to_string();
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let text = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let (mut field, message) = match text.split_once(": ") {
        Some((path, msg)) if !path.contains(' ') => (path.to_string(), msg.to_string()),
        _ => (String::new(), text.clone()),
    };
    let mut hint = None;
    // An untagged enum's own words say nothing a user wrote.
    let message = if message.contains("untagged enum CodeSpec") {
        "expected a status code (429) or a range (\"502-504\")".to_string()
    } else {
        message
    };
    let unknown_field = message.strip_prefix("unknown field `");
    let unknown = unknown_field.or_else(|| message.strip_prefix("unknown variant `"));
    if let Some(rest) = unknown {
        if let Some((name, expected)) = rest.split_once('`') {
            let options: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            hint = closest(name, options.iter().copied())
                .map(|m| format!("did you mean `{m}`?"))
                .or_else(|| {
                    (!options.is_empty())
                        .then(|| format!("expected one of: {}", options.join(", ")))
                });
            if unknown_field.is_some() {
                field = if field.is_empty() || field == "." {
                    name.to_string()
                } else {
                    format!("{field}.{name}")
                };
            }
        }
    }
    if source.trim().is_empty() {
        return Diagnostic {
            severity: Severity::Error,
            message: "the config is empty".into(),
            line: 1,
            column: 1,
            field,
            hint: Some("see configs/ for examples".into()),
        };
    }
    Diagnostic {
        severity: Severity::Error,
        message,
        line,
        column,
        field,
        hint,
    }
}
