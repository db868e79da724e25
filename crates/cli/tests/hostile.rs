//! What a careless or hostile config does to the CLI (issue 24): each is a
//! clear error naming the field, quickly, with nothing started.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("planoai-hostile-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn planoai(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_planoai"))
        .args(args)
        .current_dir(dir)
        .env("PLANO_HOME", dir.join("home"))
        .output()
        .unwrap()
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

const HEAD: &str = "version: v0.3.0
listeners: [{type: model, name: l, port: 12000}]
model_providers:
";

#[test]
fn a_provider_key_with_a_line_break_is_refused() {
    let dir = scratch("crlf");
    fs::write(
        dir.join("gw.yaml"),
        format!("{HEAD}  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:9\n    access_key: \"sk-abc\\r\\nx-evil: 1\"\n"),
    )
    .unwrap();
    let out = planoai(&dir, &["validate", "--strict", "gw.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        said(&out).contains("model_providers[0].access_key"),
        "{}",
        said(&out)
    );
    assert!(said(&out).contains("control character"), "{}", said(&out));
    assert!(
        !said(&out).contains("sk-abc"),
        "the key is printed: {}",
        said(&out)
    );
}

#[test]
fn an_endless_file_is_refused_at_the_size_cap() {
    let dir = scratch("zero");
    let start = Instant::now();
    let out = planoai(&dir, &["validate", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("larger than 16 MiB"), "{}", said(&out));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let dir = scratch("deep");
    let deep = format!("{HEAD}  - {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    fs::write(dir.join("gw.yaml"), deep).unwrap();
    let start = Instant::now();
    let out = planoai(&dir, &["validate", "gw.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        said(&out).contains("gw.yaml:4: nests deeper than 64 levels"),
        "{}",
        said(&out)
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_deployment_name_too_long_for_its_files_is_refused() {
    let dir = scratch("long");
    let name = "d".repeat(300);
    fs::write(
        dir.join("gw.yaml"),
        format!("{HEAD}  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:9\n    deployments:\n      - {{ name: {name}, access_key: sk-a }}\n"),
    )
    .unwrap();
    let out = planoai(&dir, &["validate", "gw.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        said(&out).contains("model_providers[0].deployments[0].name"),
        "{}",
        said(&out)
    );
    assert!(
        said(&out).contains("is 300 characters long"),
        "{}",
        said(&out)
    );
}

#[test]
fn a_listener_on_the_admin_port_or_a_provider_that_is_the_gateway_is_refused() {
    let dir = scratch("ports");
    fs::write(
        dir.join("gw.yaml"),
        "version: v0.3.0
listeners: [{type: model, name: l, port: 9901}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://localhost:9901/v1
",
    )
    .unwrap();
    let out = planoai(&dir, &["validate", "gw.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        said(&out).contains("port 9901 is Envoy's admin's"),
        "{}",
        said(&out)
    );
    assert!(
        said(&out).contains("model_providers[0].base_url"),
        "{}",
        said(&out)
    );
}

#[test]
fn render_into_a_file_says_it_is_not_a_directory() {
    let dir = scratch("render");
    fs::write(
        dir.join("gw.yaml"),
        format!("{HEAD}  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:9\n"),
    )
    .unwrap();
    fs::write(dir.join("taken"), "").unwrap();
    let out = planoai(&dir, &["render", "gw.yaml", "-o", "taken"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        said(&out).contains("taken is not a directory"),
        "{}",
        said(&out)
    );
}

#[test]
fn a_watched_config_that_becomes_a_dangling_link_is_reported() {
    use std::io::Read;
    let dir = scratch("watch");
    // A port nothing listens on and a missing Envoy: `up` fails at once, and
    // the watcher goes on watching.
    fs::write(
        dir.join("real.yaml"),
        format!("{HEAD}  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:9\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.join("real.yaml"), dir.join("gw.yaml")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_planoai"))
        .args(["up", "--watch", "gw.yaml"])
        .current_dir(&dir)
        .env("PLANO_HOME", dir.join("home"))
        .env("PLANO_ENVOY", "/nonexistent/envoy")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    fs::remove_file(dir.join("real.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("cannot read gw.yaml"), "{err}");
}
