//! One pass over a request body. It checks what the gateway needs of any
//! body (valid JSON, valid UTF-8 inside its strings, nesting at most
//! [`MAX_DEPTH`]) and notes, in the same pass, where the top-level members
//! the gateway reads sit. Strings, which are nearly all of a prompt, are
//! skipped eight bytes at a time.

use std::ops::Range;

use super::{BodyError, MAX_DEPTH};

/// The top-level members the gateway reads, each as its value's byte span.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Members {
    pub model: Option<Range<usize>>,
    pub stream: Option<Range<usize>>,
    pub previous_response_id: Option<Range<usize>>,
    pub conversation: Option<Range<usize>>,
    pub stream_options: Option<Range<usize>>,
    /// The answer's cap: `max_tokens` (chat completions, Messages),
    /// `max_completion_tokens` (chat's newer name) or `max_output_tokens`
    /// (Responses), read for a client key's token estimate.
    pub max_tokens: Option<Range<usize>>,
    pub max_completion_tokens: Option<Range<usize>>,
    pub max_output_tokens: Option<Range<usize>>,
}

impl Members {
    /// The slot a top-level key fills, if the gateway reads it.
    fn slot(&mut self, key: &[u8]) -> Option<(&'static str, &mut Option<Range<usize>>)> {
        match key {
            b"model" => Some(("model", &mut self.model)),
            b"stream" => Some(("stream", &mut self.stream)),
            b"previous_response_id" => {
                Some(("previous_response_id", &mut self.previous_response_id))
            }
            b"conversation" => Some(("conversation", &mut self.conversation)),
            b"stream_options" => Some(("stream_options", &mut self.stream_options)),
            b"max_tokens" => Some(("max_tokens", &mut self.max_tokens)),
            b"max_completion_tokens" => {
                Some(("max_completion_tokens", &mut self.max_completion_tokens))
            }
            b"max_output_tokens" => Some(("max_output_tokens", &mut self.max_output_tokens)),
            _ => None,
        }
    }
}

/// What the document is: an object with the members read, or valid JSON of
/// another kind.
#[derive(Debug, PartialEq, Eq)]
pub enum Document {
    Object(Members),
    NotAnObject,
}

pub fn scan(raw: &[u8]) -> Result<Document, BodyError> {
    let mut s = Scanner { raw, i: 0 };
    s.ws();
    let is_object = s.peek() == Some(b'{');
    let members = s.document()?;
    s.ws();
    if s.i != raw.len() {
        return Err(s.error("trailing characters"));
    }
    Ok(if is_object {
        Document::Object(members)
    } else {
        Document::NotAnObject
    })
}

struct Scanner<'a> {
    raw: &'a [u8],
    i: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes is `"`, `\`, a control character or,
/// unless the string is already known to be `wide`, not ASCII: the bytes a
/// string scan must stop at. Exact for "any" (the usual has-zero-byte
/// trick), which is all it is asked. A wide string is checked as UTF-8 once
/// it ends, so its other non-ASCII bytes need not stop the scan.
fn stops_string(w: u64, wide: bool) -> bool {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let high = if wide { 0 } else { w & HIGHS };
    (zero(w ^ (ONES * b'"' as u64)) | zero(w ^ (ONES * b'\\' as u64)) | below_space | high) != 0
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.raw.get(self.i).copied()
    }

    fn error(&self, what: &str) -> BodyError {
        match self.peek() {
            None => BodyError::NotJson(format!("{what} at the end of the body")),
            Some(_) => BodyError::NotJson(format!("{what} at byte {}", self.i)),
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), BodyError> {
        self.ws();
        if self.peek() != Some(b) {
            return Err(self.error(what));
        }
        self.i += 1;
        Ok(())
    }

    /// The whole value at the cursor, with an explicit stack (one bit a
    /// level: set for an object) so no body can exhaust the VM's stack.
    fn document(&mut self) -> Result<Members, BodyError> {
        let mut members = Members::default();
        let mut objects: u128 = 0;
        let mut depth = 0usize;
        // The top-level member whose value is being read: its slot and start.
        let mut reading: Option<(&'static str, usize)> = None;
        loop {
            self.ws();
            match self.peek() {
                Some(b'{' | b'[') => {
                    let object = self.peek() == Some(b'{');
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(BodyError::TooDeep);
                    }
                    // A value the gateway reads is parsed whole, within
                    // serde_json's limit, which counts the body's own level.
                    if depth == MAX_DEPTH && reading.is_some() {
                        return Err(self.error("recursion limit exceeded"));
                    }
                    // Depth 128 needs bit 127: the last of a u128.
                    let bit = 1u128 << (depth - 1);
                    objects = if object {
                        objects | bit
                    } else {
                        objects & !bit
                    };
                    self.i += 1;
                    self.ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        depth -= 1;
                    } else {
                        if object {
                            reading = self.key(depth, &mut members)?.or(reading);
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.error("expected a value")),
            }
            // After a value: close what ends here, then go on to the next.
            loop {
                if depth == 1 {
                    if let Some((name, from)) = reading.take() {
                        if let Some((_, slot)) = members.slot(name.as_bytes()) {
                            *slot = Some(from..self.i);
                        }
                    }
                }
                if depth == 0 {
                    return Ok(members);
                }
                self.ws();
                let object = objects & (1u128 << (depth - 1)) != 0;
                match (self.peek(), object) {
                    (Some(b','), _) => {
                        self.i += 1;
                        if object {
                            reading = self.key(depth, &mut members)?.or(reading);
                        }
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.i += 1;
                        depth -= 1;
                    }
                    (_, true) => return Err(self.error("expected `,` or `}`")),
                    (_, false) => return Err(self.error("expected `,` or `]`")),
                }
            }
        }
    }

    /// A member's key and its colon. At the top level, says which member
    /// the value that follows is (and refuses one named twice).
    fn key(
        &mut self,
        depth: usize,
        members: &mut Members,
    ) -> Result<Option<(&'static str, usize)>, BodyError> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a key"));
        }
        let from = self.i;
        let escaped = self.string()?;
        let to = self.i;
        self.expect(b':', "expected `:`")?;
        self.ws();
        if depth != 1 {
            return Ok(None);
        }
        let raw = &self.raw[from + 1..to - 1];
        // A top-level key is read as a string (a lone surrogate refused), as
        // serde_json reads a struct's field names.
        let unescaped;
        let key = if escaped {
            unescaped = serde_json::from_slice::<String>(&self.raw[from..to])
                .map_err(|e| BodyError::NotJson(e.to_string()))?;
            unescaped.as_bytes()
        } else {
            raw
        };
        match members.slot(key) {
            Some((name, slot)) if slot.is_some() => {
                Err(BodyError::NotJson(format!("duplicate field `{name}`")))
            }
            Some((name, _)) => Ok(Some((name, self.i))),
            None => Ok(None),
        }
    }

    /// The string at the cursor (its opening quote); returns whether it has
    /// an escape. UTF-8 is checked only in a string that has a byte past
    /// ASCII: JSON has none outside strings.
    fn string(&mut self) -> Result<bool, BodyError> {
        let start = self.i + 1;
        self.i = start;
        let (mut escaped, mut wide) = (false, false);
        loop {
            while let Some(word) = self.raw.get(self.i..self.i + 8) {
                let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
                if stops_string(w, wide) {
                    break;
                }
                self.i += 8;
            }
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                    continue;
                }
                Some(0..=0x1f) => return Err(self.error("control character in a string")),
                Some(0x80..) => wide = true,
                Some(_) => {}
            }
            self.i += 1;
        }
        if wide {
            std::str::from_utf8(&self.raw[start..self.i]).map_err(|_| {
                BodyError::NotJson(format!("invalid UTF-8 in a string at byte {start}"))
            })?;
        }
        self.i += 1;
        Ok(escaped)
    }

    /// The escape at the cursor (its backslash).
    fn escape(&mut self) -> Result<(), BodyError> {
        self.i += 1;
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
            Some(b'u') => {
                let hex = self.raw.get(self.i + 1..self.i + 5);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return Err(self.error("invalid \\u escape"));
                }
                self.i += 5;
            }
            _ => return Err(self.error("invalid escape")),
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - from
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), BodyError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), BodyError> {
        if !self.raw[self.i..].starts_with(word) {
            return Err(self.error("expected a value"));
        }
        self.i += word.len();
        Ok(())
    }
}
