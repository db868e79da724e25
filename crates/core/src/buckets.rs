//! Per-second counts as a shared-data value: `second:a:b` entries joined by
//! `,` (a retry budget's requests and retries, a client key's requests and
//! tokens). An entry that does not read as three numbers is dropped.

pub fn parse(text: &str) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    text.split(',').filter_map(|entry| {
        let mut parts = entry.split(':').map(|n| n.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    })
}

pub fn format(entries: impl Iterator<Item = (u64, u64, u64)>) -> String {
    entries
        .map(|(second, a, b)| format!("{second}:{a}:{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_read_back_as_written_and_bad_ones_are_dropped() {
        let text = super::format([(7, 1, 2), (8, 0, 30)].into_iter());
        assert_eq!(text, "7:1:2,8:0:30");
        let read: Vec<_> = super::parse("7:1:2,x:1:2,8:0,9:3:4").collect();
        assert_eq!(read, [(7, 1, 2), (9, 3, 4)]);
    }
}
