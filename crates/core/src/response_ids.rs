//! Which deployment made each Responses API response id that passed the
//! gateway, so a follow-up naming it (`previous_response_id`) goes only
//! where its state is. Kept in shared data, seen by every worker, for
//! [`REMEMBER_MS`], in a fixed number of slots (an id hashes to one; a newer
//! id in the same slot replaces it), so memory stays bounded whatever the
//! traffic. A forgotten id is served by its request's own model only.

use crate::blocks::SharedStore;

/// How long an id is remembered.
pub const REMEMBER_MS: u64 = 24 * 3600 * 1000;
/// Slots in shared data: ids remembered at most, about 100 bytes each.
pub const SLOTS: u64 = 16_384;

fn slot(id: &str) -> String {
    // FNV-1a: the same slot on every worker and every run.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("plano.response.{}", hash % SLOTS)
}

/// Notes that the target labelled `label` made response `id`.
pub fn remember(store: &dyn SharedStore, id: &str, label: &str, now_ms: u64) {
    let value = format!("{}|{label}|{id}", now_ms + REMEMBER_MS);
    let cas = store.get(&slot(id)).map_or(0, |(_, cas)| cas);
    // A lost race means another answer took the slot just now: either way
    // one of the two is remembered.
    let _ = store.set(&slot(id), value.as_bytes(), cas);
}

/// The label of the target that made `id`, while it is remembered.
pub fn recall(store: &dyn SharedStore, id: &str, now_ms: u64) -> Option<String> {
    let (value, _) = store.get(&slot(id))?;
    let text = String::from_utf8(value).ok()?;
    let mut parts = text.splitn(3, '|');
    let until: u64 = parts.next()?.parse().ok()?;
    let label = parts.next()?;
    (parts.next()? == id && until > now_ms).then(|| label.to_string())
}

/// The response id an answer's first bytes carry: the first `"id"` key's
/// string value, which is the response's own in a Responses API body and in
/// its stream's first event (`response.created`). `None` until it is seen.
pub fn find_id(prefix: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(prefix)
        .or_else(|e| std::str::from_utf8(&prefix[..e.valid_up_to()]))
        .ok()?;
    let at = text.find("\"id\"")? + 4;
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    let id = &rest[..end];
    (!id.is_empty() && !id.contains('\\')).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::memory::MemoryStore;

    #[test]
    fn an_id_is_recalled_until_it_is_forgotten() {
        let store = MemoryStore::default();
        remember(&store, "resp_1", "openai/gpt-4o[a]", 1000);
        assert_eq!(
            recall(&store, "resp_1", 2000).as_deref(),
            Some("openai/gpt-4o[a]")
        );
        assert_eq!(recall(&store, "resp_2", 2000), None);
        assert_eq!(recall(&store, "resp_1", 1000 + REMEMBER_MS), None);
    }

    #[test]
    fn the_id_is_read_from_a_body_or_the_first_event() {
        assert_eq!(
            find_id(br#"{"id": "resp_9", "object":"response"}"#).as_deref(),
            Some("resp_9")
        );
        let event = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_7\",\"status\":\"in_progress\"}}\n\n";
        assert_eq!(find_id(event).as_deref(), Some("resp_7"));
        assert_eq!(
            find_id(b"event: response.created\ndata: {\"type\":\"resp"),
            None
        );
        assert_eq!(find_id(b"{\"id\":\"resp_"), None);
    }
}
