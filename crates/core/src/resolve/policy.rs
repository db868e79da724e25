//! A provider's `retry_policy`, checked and filled with its defaults.

use std::collections::HashMap;

use super::{Checker, Severity, MAX_MODEL_NAME};
use crate::config::{BackoffScope, CodeSpec, RetryPolicyConfig, Strategy};
use crate::plan::*;

fn parse_code(c: &mut Checker, path: &str, code: &CodeSpec) -> Option<(u16, u16)> {
    let valid = |n: u16| (100..=599).contains(&n);
    let range = match code {
        CodeSpec::Code(n) => (*n, *n),
        CodeSpec::Text(t) => {
            let parsed = match t.split_once('-') {
                Some((lo, hi)) => lo.trim().parse().ok().zip(hi.trim().parse().ok()),
                None => t.trim().parse().ok().map(|n| (n, n)),
            };
            match parsed {
                Some(r) => r,
                None => {
                    c.error(
                        path,
                        format!("`{t}` is neither a status code nor a range like \"502-504\""),
                    );
                    return None;
                }
            }
        }
    };
    if !valid(range.0) || !valid(range.1) {
        c.error(path, "status codes must be between 100 and 599");
        return None;
    }
    if range.0 > range.1 {
        c.error(
            path,
            format!(
                "range {}-{} is empty: its start is above its end",
                range.0, range.1
            ),
        );
        return None;
    }
    Some(range)
}

pub(super) fn resolve_policy(
    c: &mut Checker,
    at: &str,
    rp: &RetryPolicyConfig,
    me: usize,
    targets: &[Target],
    models: &HashMap<String, usize>,
) -> RetryPolicy {
    let default_rule = Rule {
        strategy: rp.default_strategy.unwrap_or(DEFAULT_STRATEGY),
        max_attempts: rp.default_max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
    };
    let rule = |strategy: Option<Strategy>, max: Option<u32>| Rule {
        strategy: strategy.unwrap_or(default_rule.strategy),
        max_attempts: max.unwrap_or(default_rule.max_attempts),
    };

    // The fallbacks as listed; every other model follows them in config
    // order (`attempt::order`), so the plan stays linear in the models.
    let candidates = models_named(
        c,
        &format!("{at}.fallback_models"),
        &rp.fallback_models,
        me,
        targets,
        models,
    );

    let mut status_rules: Vec<StatusRule> = Vec::new();
    for (k, entry) in rp.on_status_codes.iter().enumerate() {
        let mut codes = Vec::new();
        if entry.codes.is_empty() {
            c.error(
                format!("{at}.on_status_codes[{k}].codes"),
                "lists no status code",
            );
        }
        for (n, code) in entry.codes.iter().enumerate() {
            let path = format!("{at}.on_status_codes[{k}].codes[{n}]");
            if let Some(range) = parse_code(c, &path, code) {
                let earlier = status_rules.iter().position(|r| {
                    r.codes
                        .iter()
                        .any(|&(lo, hi)| lo <= range.1 && range.0 <= hi)
                });
                if let Some(e) = earlier {
                    c.warn(
                        path,
                        format!("overlaps on_status_codes[{e}], which matches first; this entry never applies to those codes"),
                        None,
                    );
                }
                codes.push(range);
            }
        }
        status_rules.push(StatusRule {
            codes,
            rule: rule(entry.strategy, entry.max_attempts),
        });
    }

    let on_timeout = rp
        .on_timeout
        .as_ref()
        .map(|r| rule(r.strategy, r.max_attempts));

    let high_latency = rp.on_high_latency.as_ref().map(|h| {
        let hat = format!("{at}.on_high_latency");
        if h.threshold_ms == 0 {
            c.error(format!("{hat}.threshold_ms"), "must be greater than 0");
        }
        let min_triggers = h.min_triggers.unwrap_or(1);
        if min_triggers == 0 {
            c.error(format!("{hat}.min_triggers"), "must be at least 1");
        }
        if min_triggers > 1 && h.trigger_window_seconds.is_none() {
            c.push(
                Severity::Error,
                format!("{hat}.min_triggers"),
                "min_triggers above 1 needs `trigger_window_seconds`",
                Some(
                    "add `trigger_window_seconds: 60` (events older than the window are forgotten)"
                        .into(),
                ),
            );
        }
        if h.trigger_window_seconds == Some(0) {
            c.error(
                format!("{hat}.trigger_window_seconds"),
                "must be greater than 0",
            );
        }
        HighLatency {
            threshold_ms: h.threshold_ms,
            measure: h.measure,
            min_triggers: min_triggers.max(1),
            // Saturating: an absurd number of seconds must not wrap to a short window.
            window_ms: h.trigger_window_seconds.map(|s| s.saturating_mul(1000)),
            rule: rule(h.strategy, h.max_attempts),
            block_ms: h
                .block_duration_seconds
                .unwrap_or(DEFAULT_LATENCY_BLOCK_SECONDS)
                .saturating_mul(1000),
            scope: h.scope,
            apply_to: h.apply_to,
        }
    });

    let backoff = rp.backoff.as_ref().map(|b| {
        let base_ms = b.base_ms.unwrap_or(DEFAULT_BACKOFF_BASE_MS);
        let max_ms = b.max_ms.unwrap_or(DEFAULT_BACKOFF_MAX_MS);
        if base_ms == 0 {
            c.error(format!("{at}.backoff.base_ms"), "must be greater than 0");
        }
        if max_ms < base_ms {
            c.error(format!("{at}.backoff.max_ms"), format!("{max_ms} is below base_ms ({base_ms})"));
        }
        if b.apply_to == BackoffScope::SameModel && default_rule.strategy != Strategy::SameModel {
            let uses_same_model = rp.on_status_codes.iter().any(|r| r.strategy == Some(Strategy::SameModel))
                || rp.on_timeout.as_ref().is_some_and(|r| r.strategy == Some(Strategy::SameModel));
            if !uses_same_model {
                c.warn(
                    format!("{at}.backoff.apply_to"),
                    "backoff applies to same_model retries, but no rule retries the same model: it never waits",
                    Some("use `apply_to: global` to wait before every retry".into()),
                );
            }
        }
        Backoff {
            apply_to: b.apply_to,
            base_ms,
            max_ms,
            jitter: b.jitter.unwrap_or(true),
        }
    });

    let retry_after =
        rp.retry_after_handling
            .as_ref()
            .map_or_else(RetryAfterHandling::default, |r| RetryAfterHandling {
                scope: r.scope,
                apply_to: r.apply_to,
                max_ms: r
                    .max_retry_after_seconds
                    .unwrap_or(DEFAULT_MAX_RETRY_AFTER_SECONDS)
                    .saturating_mul(1000),
            });

    let failover = |s: Strategy| s != Strategy::SameModel;
    let strategies = std::iter::once(default_rule.strategy)
        .chain(status_rules.iter().map(|r| r.rule.strategy))
        .chain(on_timeout.map(|r| r.strategy));
    if targets.len() == 1 && strategies.clone().any(failover) {
        c.warn(
            at,
            "this is the only provider, so a same_provider or different_provider retry has nowhere to go",
            Some("add another provider, or use `strategy: same_model`".into()),
        );
    }

    let quota_floor = rp.rate_limit_headers.as_ref().map(|q| QuotaFloor {
        requests: q.min_remaining_requests.unwrap_or(0),
        tokens: q.min_remaining_tokens,
    });
    let retry_budget = rp.retry_budget.as_ref().map(|b| {
        if !(b.ratio >= 0.0 && b.ratio.is_finite()) {
            c.error(
                format!("{at}.retry_budget.ratio"),
                "must be 0 or more (0.2 allows 20% extra)",
            );
        }
        if b.window_seconds == Some(0) {
            c.error(
                format!("{at}.retry_budget.window_seconds"),
                "must be greater than 0",
            );
        }
        RetryBudget {
            ratio: b.ratio,
            min_per_second: b
                .min_retries_per_second
                .unwrap_or(DEFAULT_BUDGET_MIN_PER_SECOND),
            window_ms: b
                .window_seconds
                .unwrap_or(DEFAULT_BUDGET_WINDOW_SECONDS)
                .clamp(1, 3600)
                * 1000,
        }
    });

    let hedge = rp.hedge.as_ref().map(|h| {
        if h.after_ms == 0 {
            c.error(
                format!("{at}.hedge.after_ms"),
                "must be greater than 0 (a hedge at once doubles every streamed request)",
            );
        } else if h.after_ms > MAX_HEDGE_AFTER_MS {
            c.error(
                format!("{at}.hedge.after_ms"),
                format!(
                    "{} is over {MAX_HEDGE_AFTER_MS} (10 minutes): the hedge would never start",
                    h.after_ms
                ),
            );
        }
        Hedge {
            after_ms: h.after_ms,
        }
    });

    let quota_spent_block_ms = match rp.quota_spent_block_seconds {
        Some(0) => {
            c.error(
                format!("{at}.quota_spent_block_seconds"),
                "must be greater than 0: a spent quota is never retried at once",
            );
            DEFAULT_QUOTA_SPENT_BLOCK_MS
        }
        Some(s) => s.saturating_mul(1000),
        None => DEFAULT_QUOTA_SPENT_BLOCK_MS,
    };
    RetryPolicy {
        candidates,
        default_rule,
        status_rules,
        on_timeout,
        high_latency,
        backoff,
        retry_after,
        max_retry_duration_ms: rp.max_retry_duration_ms,
        quota_floor,
        retry_budget,
        hedge,
        context_fallbacks: models_named(
            c,
            &format!("{at}.context_window_fallbacks"),
            &rp.context_window_fallbacks,
            me,
            targets,
            models,
        ),
        quota_spent_block_ms,
    }
}

/// The models `names` lists at `path`, by their pools' first targets, in
/// order; a name that is this model, listed twice or defined nowhere is
/// skipped with a warning.
fn models_named(
    c: &mut Checker,
    path: &str,
    names: &[String],
    me: usize,
    targets: &[Target],
    models: &HashMap<String, usize>,
) -> Vec<usize> {
    let mut found = Vec::new();
    for (j, name) in names.iter().enumerate() {
        let at = format!("{path}[{j}]");
        if name.len() > MAX_MODEL_NAME {
            c.error(
                at,
                format!(
                    "is {} characters long; a model name is at most {MAX_MODEL_NAME}",
                    name.len()
                ),
            );
            continue;
        }
        match models.get(name.as_str()).copied() {
            Some(t) if t == me => c.warn(
                at,
                format!("`{name}` is this provider itself; it is never a fallback"),
                None,
            ),
            Some(t) if !found.contains(&t) => found.push(t),
            Some(_) => c.warn(at, format!("`{name}` is listed twice"), None),
            None => c.warn(
                at,
                format!("no provider defines `{name}`; it is skipped"),
                closest(name, targets.iter().map(|t| t.model.as_str()))
                    .map(|m| format!("did you mean `{m}`?")),
            ),
        }
    }
    found
}

/// A hedge later than this waits longer than a stream's whole-answer cap.
const MAX_HEDGE_AFTER_MS: u64 = 600_000;

/// The candidate closest to `word` by edit distance, if close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
