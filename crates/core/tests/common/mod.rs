//! Byte mutations shared by the fuzz and property tests.

use proptest::prelude::*;

/// Byte edits to apply to a valid input: (where, what, how), the bytes
/// written drawn from `byte`.
pub fn mutations(
    byte: impl Strategy<Value = u8>,
) -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), byte, 0..3u8), 1..4)
}

/// `raw` with each edit applied: overwrite, insert or delete one byte.
pub fn mutate(mut raw: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    for (at, byte, how) in edits {
        if raw.is_empty() {
            raw.push(*byte);
            continue;
        }
        let i = at.index(raw.len());
        match how {
            0 => raw[i] = *byte,
            1 => raw.insert(i, *byte),
            _ => {
                raw.remove(i);
            }
        }
    }
    raw
}
