//! Operating more than a demo config: a large config validates quickly, a
//! file saved by an editor that writes a BOM is read, an absurd model name
//! and ports that collide are refused by `validate` with the field named.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

mod common;
use common::{said, HEAD};

fn scratch(name: &str) -> PathBuf {
    common::scratch_dir("ops", name)
}

fn planoai(dir: &Path, args: &[&str]) -> Output {
    common::planoai_in(dir, args)
}

#[test]
fn ten_thousand_providers_with_a_hundred_fallbacks_each_validate_in_seconds() {
    let dir = scratch("large");
    let n = 10_000;
    let mut text = HEAD.to_string();
    for i in 0..n {
        let fallbacks: Vec<String> = (1..=100).map(|j| format!("o/m{}", (i + j) % n)).collect();
        writeln!(
            text,
            "- {{model: o/m{i}, base_url: 'http://127.0.0.1:9', retry_policy: {{fallback_models: [{}]}}}}",
            fallbacks.join(",")
        )
        .unwrap();
    }
    fs::write(dir.join("gw.yaml"), text).unwrap();
    let start = Instant::now();
    let out = planoai(&dir, &["validate", "gw.yaml"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    // A debug build on a shared machine: the linear work takes a few
    // seconds; the quadratic took minutes.
    assert!(took < Duration::from_secs(40), "validate took {took:?}");
}

#[test]
fn a_config_saved_with_a_byte_order_mark_is_read() {
    let dir = scratch("bom");
    let text =
        format!("\u{feff}{HEAD}  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:9\n");
    fs::write(dir.join("gw.yaml"), text).unwrap();
    let out = planoai(&dir, &["validate", "gw.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(!said(&out).contains("missing field"), "{}", said(&out));
}

#[test]
fn a_model_name_of_megabytes_is_refused_at_its_field() {
    let dir = scratch("model");
    let name = "m".repeat(5 << 20);
    let text = format!(
        "{HEAD}  - model: openai/{name}\n    base_url: http://127.0.0.1:9\n  - model: openai/b\n    base_url: http://127.0.0.1:9\n    retry_policy: {{fallback_models: [openai/{name}]}}\n"
    );
    fs::write(dir.join("gw.yaml"), text).unwrap();
    let start = Instant::now();
    let out = planoai(&dir, &["validate", "gw.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", &said(&out)[..2000]);
    let text = said(&out);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert!(
        text.contains("model_providers[0].model"),
        "{}",
        &text[..2000]
    );
    assert!(
        text.contains("model_providers[1].retry_policy.fallback_models[0]"),
        "{}",
        &text[..2000.min(text.len())]
    );
    assert!(
        text.contains("at most 256"),
        "{}",
        &text[..2000.min(text.len())]
    );
    // The name is not echoed back in full.
    assert!(text.len() < 100_000, "{} bytes of output", text.len());
}

#[test]
fn the_gateways_own_ports_are_set_and_never_collide() {
    let dir = scratch("ports");
    let provider = "  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:9\n";
    for (admin, refused, why) in [
        (
            "{port: 9911, status_port: 9911}",
            "admin.status_port",
            "port 9911 for the gateway's status listener is Envoy's admin's",
        ),
        (
            "{port: 12000}",
            "listeners[0].port",
            "port 12000 is Envoy's admin's",
        ),
        (
            "{status_port: 9903}",
            "admin.status_port",
            "is the Kubernetes probe listener's",
        ),
        (
            "{port: 9902}",
            "admin.status_port",
            "port 9902 for the gateway's status listener is Envoy's admin's",
        ),
    ] {
        fs::write(
            dir.join("gw.yaml"),
            format!("{HEAD}{provider}admin: {admin}\n"),
        )
        .unwrap();
        let out = planoai(&dir, &["validate", "gw.yaml"]);
        assert_eq!(out.status.code(), Some(1), "{admin}: {}", said(&out));
        assert!(said(&out).contains(refused), "{admin}: {}", said(&out));
        assert!(said(&out).contains(why), "{admin}: {}", said(&out));
    }
    // Other ports render where Envoy's admin and the status listener bind.
    fs::write(
        dir.join("gw.yaml"),
        format!("{HEAD}{provider}admin: {{port: 9911, status_port: 9912}}\n"),
    )
    .unwrap();
    assert_eq!(
        planoai(&dir, &["validate", "gw.yaml"]).status.code(),
        Some(0)
    );
    let out = planoai(&dir, &["render", "gw.yaml", "-o", "dist"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let bootstrap = fs::read_to_string(dir.join("dist/envoy.yaml")).unwrap();
    let listeners = fs::read_to_string(dir.join("dist/lds.yaml")).unwrap();
    assert!(bootstrap.contains("port_value: 9911"), "{bootstrap}");
    assert!(listeners.contains("port_value: 9912"), "{listeners}");
    assert!(!bootstrap.contains("9901") && !listeners.contains("9902"));
    assert!(
        listeners.contains(r#"\"status_port\":9912"#),
        "the filter reports on 9912"
    );
}

#[test]
fn an_ipv6_provider_renders_as_yaml_envoy_reads() {
    let dir = scratch("ipv6");
    fs::write(
        dir.join("gw.yaml"),
        format!("{HEAD}  - model: openai/gpt-4o\n    base_url: http://[::1]:8101\n"),
    )
    .unwrap();
    let out = planoai(&dir, &["render", "gw.yaml", "-o", "dist"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let text = fs::read_to_string(dir.join("dist/cds.yaml")).unwrap();
    let clusters: serde_yaml::Value = serde_yaml::from_str(&text).expect("cds.yaml is YAML");
    assert!(addresses(&clusters).contains(&"::1".to_string()), "{text}");
}

/// Every `socket_address.address` in `doc`.
fn addresses(doc: &serde_yaml::Value) -> Vec<String> {
    match doc {
        serde_yaml::Value::Mapping(m) => m
            .iter()
            .flat_map(|(k, v)| match (k.as_str(), v.get("address")) {
                (Some("socket_address"), Some(a)) => vec![a.as_str().unwrap_or("").to_string()],
                _ => addresses(v),
            })
            .collect(),
        serde_yaml::Value::Sequence(s) => s.iter().flat_map(addresses).collect(),
        _ => Vec::new(),
    }
}
