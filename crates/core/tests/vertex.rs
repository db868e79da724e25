//! Vertex AI entries as the plan carries them: the region's host, the
//! publisher's path, one credential per key file (or the metadata server),
//! and a target without a token outside a request's reach, with why.

use plano_core::api::{Api, Format};
use plano_core::config::GatewayConfig;
use plano_core::plan::GatewayPlan;
use plano_core::providers::google_auth::CredentialKind;
use plano_core::reach::Reach;
use plano_core::resolve::{resolve, Severity};
use serde_json::{json, Value};

fn resolved(providers: Value) -> (Option<GatewayPlan>, Vec<String>) {
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000}],
        "model_providers": providers,
    }))
    .expect("config");
    let (r, issues) = resolve(&config, &|_| None);
    let errors = issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .map(|i| format!("{}: {}", i.path, i.message))
        .collect();
    (r.map(|r| r.plan), errors)
}

fn chain() -> Value {
    json!([
        {"model": "vertex_ai/claude-sonnet-4@20250514", "format": "anthropic", "default": true,
         "vertex": {"project": "p", "region": "us-east5", "credentials_file": "./sa.json"}},
        {"model": "vertex_ai/gemini-2.5-flash", "format": "gemini",
         "vertex": {"project": "p", "region": "global", "credentials_file": "./sa.json"}},
        {"model": "vertex_ai/gemini-2.5-pro", "format": "gemini",
         "vertex": {"project": "p", "region": "europe-west1"}},
    ])
}

#[test]
fn vertex_entries_become_targets_at_their_regions_host_with_one_credential_per_source() {
    let (plan, errors) = resolved(chain());
    assert!(errors.is_empty(), "{errors:?}");
    let plan = plan.unwrap();
    let t = &plan.targets;
    assert_eq!(t[0].authority, "us-east5-aiplatform.googleapis.com");
    assert_eq!(t[1].authority, "aiplatform.googleapis.com");
    assert_eq!(t[2].authority, "europe-west1-aiplatform.googleapis.com");
    assert_eq!(
        t[0].attempt_path(Api::Messages, "/v1/messages", true),
        "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
    );
    assert_eq!(
        t[1].attempt_path(Api::ChatCompletions, "/v1/chat/completions", false),
        "/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    let creds: Vec<_> = t
        .iter()
        .map(|t| t.vertex.as_ref().unwrap().credential)
        .collect();
    assert_eq!(creds, [0, 0, 1]);
    assert_eq!(plan.google_credentials.len(), 2);
    assert_eq!(
        plan.google_credentials[0].kind,
        CredentialKind::ServiceAccount
    );
    assert_eq!(plan.google_credentials[0].file, "./sa.json");
    assert_eq!(plan.google_credentials[1].kind, CredentialKind::Metadata);
    // Both serve chat completions and Messages, translated where needed.
    assert_eq!(t[0].serves, [Api::ChatCompletions, Api::Messages]);
    assert_eq!(t[0].format, Format::Anthropic);
}

#[test]
fn a_base_url_replaces_the_host() {
    let (plan, errors) = resolved(json!([
        {"model": "vertex_ai/gemini-2.5-flash", "format": "gemini", "base_url": "http://127.0.0.1:9/proxy",
         "vertex": {"project": "p", "region": "us-east5"}},
    ]));
    assert!(errors.is_empty(), "{errors:?}");
    let t = &plan.unwrap().targets[0];
    assert_eq!(t.authority, "127.0.0.1:9");
    assert_eq!(
        t.attempt_path(Api::ChatCompletions, "/v1/chat/completions", true),
        "/proxy/v1/projects/p/locations/us-east5/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
}

#[test]
fn what_vertex_cannot_take_is_refused_by_field() {
    let (_, errors) = resolved(json!([
        {"model": "vertex_ai/claude", "access_key": "k",
         "vertex": {"project": "a b", "region": "us-east5", "credentials_file": ""}},
    ]));
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e.split(':').next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "model_providers[0].format",
            "model_providers[0].vertex.project",
            "model_providers[0].access_key",
            "model_providers[0].vertex.credentials_file"
        ],
        "{errors:?}"
    );
}

#[test]
fn a_target_without_a_token_is_skipped_with_why() {
    let mut providers = chain();
    providers[0]["retry_policy"] = json!({"fallback_models": ["vertex_ai/gemini-2.5-pro"]});
    let plan = resolved(providers).0.unwrap();
    let why = "no access token: the token endpoint answered 400 (invalid_grant)".to_string();
    let reach = Reach {
        no_token: vec![(0, why.clone())],
        ..Reach::anywhere(Api::Messages)
    };
    assert!(!reach.allows(&plan, 0, 0));
    assert!(reach.allows(&plan, 0, 2));
    let skipped = reach.skipped(&plan, 0);
    assert_eq!(
        skipped[0],
        json!({"model": "vertex_ai/claude-sonnet-4@20250514", "skipped": why})
    );
}
