//! The `planoai` binary as a user runs it: every error class of `validate`,
//! `render` output that Envoy itself accepts, help and version.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{as_static, envoy, WORKSPACE};

fn planoai(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_planoai"))
        .args(args)
        .current_dir(dir)
        .env("PLANO_HOME", dir.join("home"))
        .env_remove("PLANO_TEST_KEY")
        .output()
        .expect("run planoai")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("planoai-cli-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const HEAD: &str = "version: v0.3.0\nlisteners:\n  - type: model\n    name: l\n    port: 12000\nmodel_providers:\n";

#[test]
fn version_and_help_for_every_command() {
    let dir = scratch("help");
    let v = planoai(&["--version"], &dir);
    assert_eq!(
        stdout(&v).trim(),
        format!("planoai {}", env!("CARGO_PKG_VERSION"))
    );
    for cmd in [
        "up", "down", "validate", "render", "status", "logs", "build",
    ] {
        let out = planoai(&[cmd, "--help"], &dir);
        assert!(out.status.success(), "{cmd}");
        assert!(
            stdout(&out).contains("Example"),
            "{cmd} --help has no example"
        );
    }
}

#[test]
fn an_unknown_field_names_file_line_field_and_the_likely_fix() {
    let dir = scratch("unknown");
    let cfg = dir.join("gw.yaml");
    fs::write(
        &cfg,
        format!("{HEAD}  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:9\n    retry_policy:\n      backof: {{apply_to: global}}\n"),
    )
    .unwrap();
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error: unknown field `backof`"), "{err}");
    assert!(err.contains("--> gw.yaml:10:7"), "{err}");
    assert!(
        err.contains("10 |       backof: {apply_to: global}"),
        "{err}"
    );
    assert!(
        err.contains("field: model_providers[0].retry_policy.backof"),
        "{err}"
    );
    assert!(err.contains("help: did you mean `backoff`?"), "{err}");
}

#[test]
fn a_yaml_syntax_error_points_at_its_line() {
    let dir = scratch("syntax");
    fs::write(
        dir.join("gw.yaml"),
        format!("{HEAD}  - model: [openai/gpt-4o\n"),
    )
    .unwrap();
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--> gw.yaml:7:12"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_semantic_error_is_reported_at_once() {
    let dir = scratch("semantic");
    let text = format!(
        "{HEAD}  - model: openai/gpt-4o
    base_url: ftp://nowhere
    access_key: $PLANO_TEST_KEY
    default: true
    retry_policy:
      on_status_codes:
        - codes: [\"504-502\", 700]
      on_high_latency:
        threshold_ms: 100
        min_triggers: 3
      backoff:
        apply_to: global
        base_ms: 900
        max_ms: 100
  - model: nobody
    default: true
"
    );
    fs::write(dir.join("gw.yaml"), text).unwrap();
    // --strict: the unset variable is an error too, as `up` sees it.
    let out = planoai(&["validate", "--strict", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for (message, place, field) in [
        (
            "base_url `ftp://nowhere` must start with http:// or https://",
            "gw.yaml:8:5",
            "model_providers[0].base_url",
        ),
        (
            "environment variable `PLANO_TEST_KEY` is not set",
            "gw.yaml:9:5",
            "model_providers[0].access_key",
        ),
        (
            "range 504-502 is empty",
            "gw.yaml:13:19",
            "model_providers[0].retry_policy.on_status_codes[0].codes[0]",
        ),
        (
            "between 100 and 599",
            "gw.yaml:13:30",
            "model_providers[0].retry_policy.on_status_codes[0].codes[1]",
        ),
        (
            "min_triggers above 1 needs `trigger_window_seconds`",
            "gw.yaml:16:9",
            "model_providers[0].retry_policy.on_high_latency.min_triggers",
        ),
        (
            "100 is below base_ms (900)",
            "gw.yaml:20:9",
            "model_providers[0].retry_policy.backoff.max_ms",
        ),
        (
            "`nobody` must be `<provider>/<model>`",
            "gw.yaml:21:5",
            "model_providers[1].model",
        ),
        (
            "only one provider can be the default",
            "gw.yaml:22:5",
            "model_providers[1].default",
        ),
    ] {
        assert!(err.contains(message), "missing {message:?} in\n{err}");
        assert!(
            err.contains(&format!("--> {place}")),
            "missing {place} in\n{err}"
        );
        assert!(
            err.contains(&format!("field: {field}")),
            "missing {field} in\n{err}"
        );
    }
    assert!(err.contains("8 error(s)"), "{err}");
}

#[test]
fn warnings_do_not_fail_validation() {
    let dir = scratch("warnings");
    let text = format!(
        "{HEAD}  - model: openai/gpt-4o
    base_url: http://127.0.0.1:9
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonet]
      on_status_codes:
        - codes: [429]
        - codes: [\"400-430\"]
  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:9
"
    );
    fs::write(dir.join("gw.yaml"), text).unwrap();
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: no provider defines `anthropic/claude-3-5-sonet`"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `anthropic/claude-3-5-sonnet`?"),
        "{err}"
    );
    assert!(
        err.contains("warning: overlaps on_status_codes[0]"),
        "{err}"
    );
    assert!(stdout(&out).contains("valid (2 providers, 2 warning(s))"));
}

#[test]
fn the_larger_window_and_the_spent_quota_time_are_checked_where_they_are_written() {
    let dir = scratch("larger-window");
    let text = format!(
        "{HEAD}  - model: openai/gpt-4o
    base_url: http://127.0.0.1:9
    retry_policy:
      context_window_fallbacks: [openai/gpt-4.1-mni, openai/gpt-4o]
      quota_spent_block_seconds: 0
  - model: openai/gpt-4.1-mini
    base_url: http://127.0.0.1:9
"
    );
    fs::write(dir.join("gw.yaml"), text).unwrap();
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for (message, place) in [
        ("no provider defines `openai/gpt-4.1-mni`", "gw.yaml:10:34"),
        ("did you mean `openai/gpt-4.1-mini`?", "gw.yaml:10:34"),
        ("`openai/gpt-4o` is this provider itself", "gw.yaml:10:54"),
        ("must be greater than 0", "gw.yaml:11:7"),
    ] {
        assert!(err.contains(message), "missing {message:?} in\n{err}");
        assert!(err.contains(place), "missing {place} in\n{err}");
    }
}

#[test]
fn keys_come_from_the_environment_or_a_dotenv_and_never_show() {
    let dir = scratch("dotenv");
    fs::write(
        dir.join("gw.yaml"),
        format!("{HEAD}  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:9\n    access_key: ${{PLANO_TEST_KEY}}\n"),
    )
    .unwrap();
    assert_eq!(
        planoai(&["validate", "--strict", "gw.yaml"], &dir)
            .status
            .code(),
        Some(1)
    );
    fs::write(
        dir.join(".env"),
        "# keys\nexport PLANO_TEST_KEY=\"sk-cli-secret\"\n",
    )
    .unwrap();
    let out = planoai(&["render", "gw.yaml", "-o", "out"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    // The key is in its owner-only file, and not in Envoy's config (whose
    // contents Envoy's admin shows).
    let key_file = dir.join("out/keys/provider_0.key");
    assert_eq!(
        fs::read_to_string(&key_file).unwrap(),
        "Bearer sk-cli-secret"
    );
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for name in ["envoy.yaml", "lds.yaml", "cds.yaml"] {
        assert!(!fs::read_to_string(dir.join("out").join(name))
            .unwrap()
            .contains("sk-cli-secret"));
    }
    assert!(!stdout(&out).contains("sk-cli-secret") && !stderr(&out).contains("sk-cli-secret"));
}

#[test]
fn every_example_config_renders_to_what_envoy_accepts() {
    let dir = scratch("render");
    let configs = Path::new(WORKSPACE).join("configs");
    let mut checked = 0;
    for entry in fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out_dir = dir.join(path.file_stem().unwrap());
        let out = Command::new(env!("CARGO_BIN_EXE_planoai"))
            .args([
                "render",
                path.to_str().unwrap(),
                "-o",
                out_dir.to_str().unwrap(),
            ])
            .env("PLANO_HOME", dir.join("home"))
            .env("OPENAI_API_KEY", "sk-example")
            .env("ANTHROPIC_API_KEY", "sk-example")
            .env("MISTRAL_API_KEY", "sk-example")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        // `--mode validate` does not read the watched lds.yaml and cds.yaml:
        // it checks them as static resources.
        let check = Command::new(envoy())
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(as_static(&out_dir, |text| text))
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{} rejected by envoy: {}{}",
            path.display(),
            stdout(&check),
            stderr(&check)
        );
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} configs checked");
}

#[test]
fn down_and_status_without_a_gateway_say_so() {
    let dir = scratch("idle");
    let down = planoai(&["down"], &dir);
    assert!(down.status.success());
    assert_eq!(stdout(&down).trim(), "no gateway is running");
    let status = planoai(&["status"], &dir);
    assert_eq!(status.status.code(), Some(3));
    assert_eq!(stdout(&status).trim(), "not running");
}

#[test]
fn the_kubernetes_manifest_carries_the_rendered_config_in_a_secret() {
    use serde::Deserialize;
    let dir = scratch("k8s");
    let demo = Path::new(WORKSPACE).join("configs/demo.yaml");
    let out = planoai(
        &[
            "render",
            demo.to_str().unwrap(),
            "-o",
            "out",
            "--kubernetes",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("kubectl create configmap plano-filter --from-file="));
    let manifest = fs::read_to_string(dir.join("out/kubernetes.yaml")).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&manifest)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Secret", "Deployment"]);
    // Every file Envoy reads, as a key of the Secret mounted as a directory
    // (so Envoy watching it sees the kubelet swap in a new version).
    for name in ["envoy.yaml", "lds.yaml", "cds.yaml"] {
        let embedded = docs[0]["stringData"][name].as_str().unwrap();
        assert!(
            embedded.trim_end()
                == fs::read_to_string(dir.join("out").join(name))
                    .unwrap()
                    .trim_end(),
            "{name}"
        );
    }
    let embedded = docs[0]["stringData"]["lds.yaml"].as_str().unwrap();
    assert!(embedded.contains("/usr/local/share/plano/plano_filter.wasm"));
    let sidecar = &docs[1]["spec"]["template"]["spec"]["containers"][1];
    assert_eq!(sidecar["image"].as_str(), Some("envoyproxy/envoy:v1.40.0"));
    assert_eq!(
        fs::metadata(dir.join("out/kubernetes.yaml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn a_gemini_entry_is_checked_at_its_lines() {
    let dir = scratch("gemini");
    fs::write(
        dir.join("gw.yaml"),
        format!(
            "{HEAD}  - model: gemini/gemini-2.0-flash
    access_key: k
    format: gemini
  - model: google/gemini flash?
    base_url: http://127.0.0.1:9
    format: gemini
    endpoints: [chat_completions, embeddings]
"
        ),
    )
    .unwrap();
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for expected in [
        "cannot name a Gemini model: it goes in the path",
        "--> gw.yaml:10:5",
        "`embeddings` is not served by a `gemini`-format model",
        "--> gw.yaml:13:5",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
    fs::write(
        dir.join("typo.yaml"),
        format!("{HEAD}  - model: gemini/gemini-x\n    format: gemnii\n"),
    )
    .unwrap();
    let err = stderr(&planoai(&["validate", "typo.yaml"], &dir));
    assert!(err.contains("--> typo.yaml:8:13"), "{err}");
    assert!(err.contains("`openai`, `anthropic`, `gemini`"), "{err}");
    // The first entry, valid, renders with its key in Gemini's header.
    fs::write(
        dir.join("ok.yaml"),
        format!(
            "{HEAD}  - model: gemini/gemini-2.0-flash\n    access_key: k\n    format: gemini\n"
        ),
    )
    .unwrap();
    let out = planoai(&["validate", "ok.yaml"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_bedrock_entry_needs_its_region_and_is_signed_by_envoy_without_a_key() {
    let dir = scratch("bedrock");
    fs::write(
        dir.join("gw.yaml"),
        format!(
            "{HEAD}  - model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0
    format: bedrock
  - model: aws/meta.llama3-1-70b-instruct-v1:0
    format: bedrock
    region: US East
    endpoints: [chat_completions, responses]
"
        ),
    )
    .unwrap();
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for expected in [
        "is required for a `bedrock`-format model",
        "--> gw.yaml:7:5",
        "`US East` is no AWS region",
        "`responses` is not served by a `bedrock`-format model",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
    fs::write(
        dir.join("ok.yaml"),
        format!(
            "{HEAD}  - model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0
    format: bedrock
    region: eu-west-3
    default: true
  - model: bedrock/meta.llama3-1-70b-instruct-v1:0
    format: bedrock
    region: us-west-2
    access_key: ABSK-cli-bedrock-key
"
        ),
    )
    .unwrap();
    let out = planoai(&["render", "ok.yaml", "-o", "out"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let cds = fs::read_to_string(dir.join("out/cds.yaml")).unwrap();
    // The keyless entry's cluster signs for its region; the keyed one does not sign.
    assert_eq!(
        cds.matches("envoy.filters.http.aws_request_signing")
            .count(),
        1,
        "{cds}"
    );
    assert!(
        cds.contains("service_name: bedrock") && cds.contains("region: \"eu-west-3\""),
        "{cds}"
    );
    assert!(
        cds.contains("bedrock-runtime.eu-west-3.amazonaws.com"),
        "{cds}"
    );
    assert!(
        cds.contains("bedrock-runtime.us-west-2.amazonaws.com"),
        "{cds}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("out/keys/provider_0.key")).unwrap(),
        "Bearer ABSK-cli-bedrock-key"
    );
    for name in ["envoy.yaml", "lds.yaml", "cds.yaml"] {
        let text = fs::read_to_string(dir.join("out").join(name)).unwrap();
        assert!(!text.contains("ABSK-cli-bedrock-key"), "{name}");
    }
}

#[test]
fn a_vertex_config_renders_to_what_envoy_accepts_with_the_key_only_in_the_environment() {
    use serde::Deserialize;
    let dir = scratch("vertex");
    let pem =
        fs::read_to_string(Path::new(WORKSPACE).join("tests/fixtures/google/test-only-key.pem"))
            .unwrap();
    let key = serde_json::json!({
        "type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": pem,
        "client_email": "sa@p.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token",
    });
    fs::write(dir.join("sa.json"), key.to_string()).unwrap();
    fs::write(
        dir.join("gw.yaml"),
        "version: v0.3.0\nlisteners: [{ type: model, name: model_listener, port: 12000 }]\nmodel_providers:\n  \
         - model: vertex_ai/claude-sonnet-4@20250514\n    format: anthropic\n    default: true\n    \
         vertex: { project: p, region: us-east5, credentials_file: ./sa.json }\n  \
         - model: vertex_ai/gemini-2.5-flash\n    format: gemini\n    \
         vertex: { project: p, region: global }\n",
    )
    .unwrap();
    let out = planoai(&["render", "gw.yaml", "-o", "out"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let check = Command::new(envoy())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(as_static(&dir.join("out"), |text| text))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "envoy: {}{}",
        stdout(&check),
        stderr(&check)
    );
    let secret_line = pem.lines().nth(1).unwrap();
    let bootstrap = fs::read_to_string(dir.join("out/envoy.yaml")).unwrap();
    let clusters = fs::read_to_string(dir.join("out/cds.yaml")).unwrap();
    let listeners = fs::read_to_string(dir.join("out/lds.yaml")).unwrap();
    assert!(
        bootstrap.contains("host_env_keys: [\"PLANO_GOOGLE_CREDENTIAL_0\"]"),
        "{bootstrap}"
    );
    assert!(bootstrap.contains("root_id: plano_google_tokens"));
    // The service account's token endpoint, and the metadata server.
    assert!(clusters.contains("oauth2.googleapis.com") && clusters.contains("169.254.169.254"));
    assert!(
        clusters.contains("us-east5-aiplatform.googleapis.com")
            && clusters.contains("\"aiplatform.googleapis.com\"")
    );
    for text in [
        &bootstrap,
        &clusters,
        &listeners,
        &stdout(&out),
        &stderr(&out),
    ] {
        assert!(!text.contains(secret_line) && !text.contains("PRIVATE KEY"));
    }
    // The key's copy beside the provider keys, owner-only.
    let copy = dir.join("out/keys/google_0.key");
    assert_eq!(fs::read_to_string(&copy).unwrap(), key.to_string());
    assert_eq!(
        fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Kubernetes: the sidecar takes the variable from the Secret's file.
    let out = planoai(&["render", "gw.yaml", "-o", "k8s", "--kubernetes"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest = fs::read_to_string(dir.join("k8s/kubernetes.yaml")).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&manifest)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .collect();
    assert!(docs[0]["stringData"]["google_0.key"]
        .as_str()
        .unwrap()
        .contains(secret_line));
    let env = &docs[1]["spec"]["template"]["spec"]["containers"][1]["env"][0];
    assert_eq!(env["name"].as_str(), Some("PLANO_GOOGLE_CREDENTIAL_0"));
    assert_eq!(
        env["valueFrom"]["secretKeyRef"]["key"].as_str(),
        Some("google_0.key")
    );
    assert_eq!(
        env["valueFrom"]["secretKeyRef"]["name"].as_str(),
        Some("plano-envoy-config")
    );
}
