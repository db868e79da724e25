//! What `planoai top` shows, from two readings of the gateway's stats
//! (Envoy's `/stats/prometheus`) and its blocks: per model and deployment,
//! rates over the time between the readings.

use std::collections::BTreeMap;

/// One reading of `/stats/prometheus`: series -> value.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub at_secs: f64,
    samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A block in force, as the status listener reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// `model openai/gpt-4o`, `deployment openai/gpt-4o[west]`, `provider openai`.
    pub blocked: String,
    pub remaining_ms: u64,
    /// Why, when it is not a wait the provider asked for: `quota spent`.
    pub reason: Option<String>,
}

impl Block {
    /// `deployment openai/gpt-4o[a] (quota spent)`.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(reason) => format!("{} ({reason})", self.blocked),
            None => self.blocked.clone(),
        }
    }
}

/// One line of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub model: String,
    pub deployment: String,
    pub attempts_per_s: f64,
    /// Share of the attempts that succeeded, when there were any.
    pub success_pct: Option<f64>,
    pub failovers_per_s: f64,
    pub rate_limited: u64,
    /// The longest block on the row's model, deployment or provider.
    pub block_ms: Option<u64>,
    pub ttfb_p50_ms: Option<f64>,
}

impl Reading {
    /// Reads Prometheus text format: `name{k="v",...} value` lines.
    pub fn parse(text: &str, at_secs: f64) -> Reading {
        let samples = text
            .lines()
            .filter(|l| l.starts_with("plano_"))
            .filter_map(parse_line)
            .collect();
        Reading { at_secs, samples }
    }

    fn sum(
        &self,
        name: &str,
        model: &str,
        deployment: &str,
        extra: &dyn Fn(&Sample) -> bool,
    ) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && label(s, "model") == model)
            .filter(|s| label(s, "deployment") == deployment && extra(s))
            .map(|s| s.value)
            .sum()
    }

    /// Every (model, deployment) the gateway has series for.
    fn targets(&self) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = self
            .samples
            .iter()
            .filter(|s| s.name == "plano_model_ttfb_ms_count")
            .map(|s| {
                (
                    label(s, "model").to_string(),
                    label(s, "deployment").to_string(),
                )
            })
            .collect();
        found.sort();
        found.dedup();
        found
    }

    fn buckets(&self, model: &str, deployment: &str) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.name == "plano_model_ttfb_ms_bucket")
            .filter(|s| label(s, "model") == model && label(s, "deployment") == deployment)
            .filter_map(|s| Some((le(label(s, "le"))?, s.value)))
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

fn label<'a>(s: &'a Sample, key: &str) -> &'a str {
    s.labels.get(key).map_or("", String::as_str)
}

fn le(text: &str) -> Option<f64> {
    if text == "+Inf" {
        Some(f64::INFINITY)
    } else {
        text.parse().ok()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_string(), value);
        rest = after.get(end + 1..)?.trim_start_matches(',');
    }
    Some(labels)
}

/// The view's rows: what changed from `before` to `now`, and the blocks now.
pub fn rows(before: &Reading, now: &Reading, blocks: &[Block]) -> Vec<Row> {
    let secs = (now.at_secs - before.at_secs).max(0.001);
    now.targets()
        .into_iter()
        .map(|(model, deployment)| {
            let delta = |name: &str, extra: &dyn Fn(&Sample) -> bool| {
                (now.sum(name, &model, &deployment, extra)
                    - before.sum(name, &model, &deployment, extra))
                .max(0.0)
            };
            let attempts = delta("plano_model_attempts", &|_| true);
            let ok = delta("plano_model_attempts", &|s| {
                label(s, "outcome")
                    .parse::<u16>()
                    .is_ok_and(|c| (200..400).contains(&c))
            });
            let provider = model.split('/').next().unwrap_or_default();
            let covering = [
                format!("model {model}"),
                format!("deployment {model}[{deployment}]"),
                format!("provider {provider}"),
            ];
            Row {
                attempts_per_s: attempts / secs,
                success_pct: (attempts > 0.0).then(|| 100.0 * ok / attempts),
                failovers_per_s: delta("plano_model_failovers", &|_| true) / secs,
                rate_limited: now.sum("plano_model_attempts", &model, &deployment, &|s| {
                    label(s, "outcome") == "429"
                }) as u64,
                block_ms: blocks
                    .iter()
                    .filter(|b| covering.contains(&b.blocked))
                    .map(|b| b.remaining_ms)
                    .max(),
                ttfb_p50_ms: median(
                    &before.buckets(&model, &deployment),
                    &now.buckets(&model, &deployment),
                ),
                model,
                deployment,
            }
        })
        .collect()
}

/// The median of the samples that arrived between two readings of a
/// cumulative histogram: the upper bound of the bucket it falls in.
fn median(before: &[(f64, f64)], now: &[(f64, f64)]) -> Option<f64> {
    let counts: Vec<(f64, f64)> = now
        .iter()
        .map(|&(bound, n)| {
            let was = before.iter().find(|b| b.0 == bound).map_or(0.0, |b| b.1);
            (bound, n - was)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    counts
        .iter()
        .find(|(_, n)| *n >= total / 2.0)
        .map(|(bound, _)| *bound)
        .filter(|b| b.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE plano_model_attempts counter
plano_model_attempts{model="openai/gpt-4o",deployment="east",provider="openai",outcome="200"} 10
plano_model_ttfb_ms_bucket{model="openai/gpt-4o",deployment="east",le="5"} 2
plano_model_ttfb_ms_bucket{model="openai/gpt-4o",deployment="east",le="10"} 10
plano_model_ttfb_ms_bucket{model="openai/gpt-4o",deployment="east",le="+Inf"} 10
plano_model_ttfb_ms_count{model="openai/gpt-4o",deployment="east"} 10
envoy_cluster_upstream_rq{envoy_cluster_name="x"} 3
"#;
    const NOW: &str = r#"plano_model_attempts{model="openai/gpt-4o",deployment="east",provider="openai",outcome="200"} 16
plano_model_attempts{model="openai/gpt-4o",deployment="east",provider="openai",outcome="429"} 2
plano_model_failovers{model="openai/gpt-4o",deployment="east"} 2
plano_model_ttfb_ms_bucket{model="openai/gpt-4o",deployment="east",le="5"} 2
plano_model_ttfb_ms_bucket{model="openai/gpt-4o",deployment="east",le="10"} 12
plano_model_ttfb_ms_bucket{model="openai/gpt-4o",deployment="east",le="+Inf"} 18
plano_model_ttfb_ms_count{model="openai/gpt-4o",deployment="east"} 18
"#;

    #[test]
    fn rates_over_the_time_between_readings() {
        let blocks = [
            Block {
                blocked: "deployment openai/gpt-4o[east]".into(),
                remaining_ms: 29_500,
                reason: None,
            },
            Block {
                blocked: "provider anthropic".into(),
                remaining_ms: 5_000,
                reason: None,
            },
        ];
        let rows = rows(
            &Reading::parse(BEFORE, 0.0),
            &Reading::parse(NOW, 2.0),
            &blocks,
        );
        assert_eq!(
            rows,
            vec![Row {
                model: "openai/gpt-4o".into(),
                deployment: "east".into(),
                attempts_per_s: 4.0,
                success_pct: Some(75.0),
                failovers_per_s: 1.0,
                rate_limited: 2,
                block_ms: Some(29_500),
                // 8 new samples: 2 up to 10 ms, 6 above the last bound.
                ttfb_p50_ms: None,
            }]
        );
    }

    #[test]
    fn the_median_is_its_buckets_upper_bound() {
        let before = [(5.0, 0.0), (10.0, 0.0), (f64::INFINITY, 0.0)];
        let now = [(5.0, 1.0), (10.0, 3.0), (f64::INFINITY, 4.0)];
        assert_eq!(median(&before, &now), Some(10.0));
        assert_eq!(median(&now, &now), None);
    }

    #[test]
    fn label_values_are_unescaped() {
        let r = Reading::parse("plano_x{model=\"a\\\"b\",deployment=\"\"} 1\n", 0.0);
        let s = r
            .samples
            .first()
            .map(|s| (label(s, "model").to_string(), s.value));
        assert_eq!(s, Some(("a\"b".to_string(), 1.0)));
    }
}
