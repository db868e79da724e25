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

/// Several replicas' entries added up second by second, as this replica
/// counts them: an entry dated after `now_second` (a clock running ahead, a
/// rogue value) counts as now's, so it leaves the window as one of now's;
/// sums saturate rather than wrap.
pub fn sum<'a>(values: impl Iterator<Item = &'a str>, now_second: u64) -> Vec<(u64, u64, u64)> {
    let mut all: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for (second, a, b) in values.flat_map(parse) {
        let at = all.entry(second.min(now_second)).or_default();
        *at = (at.0.saturating_add(a), at.1.saturating_add(b));
    }
    all.into_iter().map(|(s, (a, b))| (s, a, b)).collect()
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

    #[test]
    fn sums_add_by_second_clamp_the_future_and_saturate() {
        let max = u64::MAX.to_string();
        let rogue = format!("9:{max}:0,999999:5:5");
        let values = ["7:1:2,8:0:30", "8:1:1", rogue.as_str()];
        let sum = super::sum(values.into_iter(), 9);
        assert_eq!(sum, [(7, 1, 2), (8, 1, 31), (9, u64::MAX, 5)]);
    }
}
