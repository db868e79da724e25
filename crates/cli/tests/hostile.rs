//! What a careless or hostile config does to the CLI (issue 24): each is a
//! clear error naming the field, quickly, with nothing started.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::{said, HEAD};

fn scratch(name: &str) -> PathBuf {
    common::scratch_dir("hostile", name)
}

fn planoai(dir: &Path, args: &[&str]) -> Output {
    common::planoai_in(dir, args)
}

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

#[test]
fn logs_follow_loses_no_line_when_the_log_rotates_fast() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let dir = scratch("follow");
    let run = dir.join("home/run");
    fs::create_dir_all(&run).unwrap();
    let log = run.join("envoy.log");
    fs::write(&log, "").unwrap();
    let state = run.join("state.json");
    fs::write(
        &state,
        format!(
            r#"{{"mode":"native","config":"gw.yaml","port":12000,"pid":null,"started_at":0,"log":{:?}}}"#,
            log.display().to_string()
        ),
    )
    .unwrap();
    let cli = env!("CARGO_BIN_EXE_planoai");
    let mut follower = Command::new(cli)
        .args(["logs", "-f", "--envoy"])
        .env("PLANO_HOME", dir.join("home"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = std::thread::spawn({
        let out = follower.stdout.take().unwrap();
        move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        }
    });
    let mut writer = Command::new(cli)
        .arg("log-writer")
        .arg(&log)
        .args(["--max-bytes", "4000", "--files", "3"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = writer.stdin.take().unwrap();
    // 3,000 lines of 40 bytes in 4 s: 30 rotations, about 7 a second.
    for batch in 0..40 {
        for n in 0..75 {
            writeln!(
                input,
                "line {:06} ............................",
                batch * 75 + n
            )
            .unwrap();
        }
        input.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(input);
    writer.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    fs::remove_file(&state).unwrap();
    follower.wait().unwrap();
    let seen = seen.join().unwrap();
    let missing = (0..3000)
        .filter(|n| !seen.iter().any(|l| l.starts_with(&format!("line {n:06} "))))
        .count();
    assert_eq!(missing, 0, "{missing} of 3000 lines never shown");
}
