//! Who may reach the gateway, as `planoai` enforces it: a listener other
//! machines can reach needs client keys or an explicit opt-out, keys never
//! leave the CLI in clear, and the Kubernetes sidecar follows the same rule.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{as_static, envoy};
const KEY: &str = "ci-key-from-dotenv-0123456789";

fn planoai(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_planoai"))
        .args(args)
        .current_dir(dir)
        .env("PLANO_HOME", dir.join("home"))
        .env_remove("PLANO_CI_KEY")
        .output()
        .expect("run planoai")
}

fn scratch(name: &str, config: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("planoai-keys-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("gw.yaml"), config).unwrap();
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn config(listener_extra: &str) -> String {
    format!(
        "version: v0.3.0\nlisteners:\n  - type: model\n    name: l\n    port: 12000\n{listener_extra}model_providers:\n  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:9\n"
    )
}

#[test]
fn an_open_listener_without_keys_is_refused_with_its_line_and_the_fixes() {
    let dir = scratch("open", &config("    address: 0.0.0.0\n"));
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("--> gw.yaml:6:"), "{err}");
    assert!(err.contains("listeners[0].address"), "{err}");
    for fix in [
        "client_keys",
        "address: 127.0.0.1",
        "allow_unauthenticated: true",
    ] {
        assert!(err.contains(fix), "{err}");
    }

    let dir = scratch(
        "opt-out",
        &config("    address: 0.0.0.0\n    allow_unauthenticated: true\n"),
    );
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning"));
}

#[test]
fn a_key_from_dotenv_reaches_the_rendered_config_only_as_its_digest() {
    let dir = scratch(
        "dotenv",
        &config(
            "    address: 0.0.0.0\n    client_keys:\n      - { name: ci, key: $PLANO_CI_KEY }\n",
        ),
    );
    // An unset variable is a warning for `validate`, an error with --strict (as for `up`).
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = planoai(&["validate", "--strict", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("listeners[0].client_keys[0].key"));
    assert!(
        text(&out.stderr).contains("--> gw.yaml:8:"),
        "{}",
        text(&out.stderr)
    );

    fs::write(dir.join(".env"), format!("PLANO_CI_KEY={KEY}\n")).unwrap();
    let out = planoai(&["render", "gw.yaml", "-o", "out"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rendered = ["envoy.yaml", "lds.yaml", "cds.yaml"]
        .map(|f| fs::read_to_string(dir.join("out").join(f)).unwrap())
        .concat();
    assert!(!rendered.contains(KEY));
    let digest = plano_core::clients::to_hex(&plano_core::clients::digest(KEY));
    assert!(rendered.contains(&digest));
    assert!(!text(&out.stdout).contains(KEY) && !text(&out.stderr).contains(KEY));
}

#[test]
fn the_kubernetes_sidecar_listens_on_loopback_and_is_probed_on_a_healthz_only_listener() {
    let dir = scratch("k8s", &config(""));
    let wasm = dir.join("out/plano_filter.wasm");
    let out = planoai(&["render", "gw.yaml", "-o", "out", "--kubernetes"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = fs::read_to_string(dir.join("out/kubernetes.yaml")).unwrap();
    assert_eq!(manifest.matches("port: 9903 }").count(), 2, "{manifest}");
    let rendered = fs::read_to_string(dir.join("out/lds.yaml")).unwrap();
    assert!(rendered.contains("address: \"127.0.0.1\", port_value: 12000"));
    assert!(rendered.contains("address: 0.0.0.0, port_value: 9903"));

    // Envoy accepts it, with the filter where the sidecar will find it, its
    // listeners and clusters as static ones (`--mode validate` does not read
    // the watched files) and the key files where they are here.
    let local = as_static(&dir.join("out"), |text| {
        text.replace(
            "/usr/local/share/plano/plano_filter.wasm",
            wasm.to_str().unwrap(),
        )
        .replace("/etc/plano", dir.join("out").to_str().unwrap())
    });
    let check = Command::new(envoy())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(local)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));

    let dir = scratch("k8s-open", &config("    address: 0.0.0.0\n"));
    let out = planoai(&["render", "gw.yaml", "-o", "out", "--kubernetes"], &dir);
    assert!(!out.status.success());
    assert!(!dir.join("out/kubernetes.yaml").exists());
}

#[test]
fn a_zero_limit_and_a_reserve_past_one_are_refused_at_their_lines() {
    let dir = scratch(
        "limits",
        &config(
            "    priority_reserve: 1.5\n    client_keys:\n      - name: batch\n        key: batch-key-0123456789abcdef\n        priority: 1\n        limits:\n          requests_per_minute: 0\n      - name: app\n        key: app-key-0123456789abcdef\n",
        ),
    );
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("--> gw.yaml:12:11"), "{err}");
    assert!(
        err.contains("listeners[0].client_keys[0].limits.requests_per_minute"),
        "{err}"
    );
    assert!(err.contains("--> gw.yaml:6:5"), "{err}");
    assert!(err.contains("listeners[0].priority_reserve"), "{err}");
    assert!(!err.contains("batch-key-0123456789abcdef"), "{err}");
}
