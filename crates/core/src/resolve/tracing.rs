//! The `tracing` section: a collector Envoy can reach, a sampling share.

use super::{parse_base_url, Checker, Endpoint};
use crate::config::TracingConfig;
use crate::plan::TracePlan;

/// The trace plan and the collector's address. A bad field is reported as an
/// error, so no plan is built from what stands in for it.
pub(super) fn resolve(c: &mut Checker, t: &TracingConfig) -> (TracePlan, Endpoint) {
    let endpoint = match parse_base_url(&t.endpoint) {
        Ok(e) if !e.path_prefix.is_empty() || !e.query.is_empty() => {
            c.error(
                "tracing.endpoint",
                "an OTLP/gRPC collector is `scheme://host:port`, without a path",
            );
            e
        }
        Ok(e) => e,
        Err(message) => {
            c.error("tracing.endpoint", format!("`{}` {message}", t.endpoint));
            Endpoint::unresolved()
        }
    };
    let sampling = t.sampling.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sampling) {
        c.error(
            "tracing.sampling",
            format!("{sampling} is not a share: it must be from 0 to 1"),
        );
    }
    let service_name = t.service_name.clone().unwrap_or_else(|| "plano".into());
    if service_name.is_empty()
        || service_name.len() > 128
        || service_name.chars().any(char::is_control)
    {
        c.error(
            "tracing.service_name",
            "must be 1 to 128 printable characters",
        );
    }
    (
        TracePlan {
            sampling,
            service_name,
        },
        endpoint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(endpoint: &str, sampling: Option<f64>) -> (TracePlan, Endpoint, Vec<String>) {
        let mut c = Checker { issues: Vec::new() };
        let config = TracingConfig {
            endpoint: endpoint.into(),
            sampling,
            service_name: None,
        };
        let (plan, e) = resolve(&mut c, &config);
        (plan, e, c.issues.into_iter().map(|i| i.path).collect())
    }

    #[test]
    fn a_collector_and_the_defaults() {
        let (plan, e, issues) = check("http://localhost:4317", None);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!((plan.sampling, plan.service_name.as_str()), (1.0, "plano"));
        assert_eq!((e.host.as_str(), e.port, e.tls), ("localhost", 4317, false));
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(check("grpc://c:4317", Some(0.5)).2, ["tracing.endpoint"]);
        assert_eq!(
            check("http://c:4317/v1/traces", None).2,
            ["tracing.endpoint"]
        );
        assert_eq!(check("https://c", Some(1.5)).2, ["tracing.sampling"]);
        assert_eq!(check("https://c", Some(-0.1)).2, ["tracing.sampling"]);
    }
}
