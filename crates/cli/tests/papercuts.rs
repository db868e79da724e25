//! Issue 18's CLI papercuts, through the real binary: a reader that goes
//! away early, and `validate` before the secrets are at hand.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("planoai-papercuts-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn planoai(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_planoai"));
    cmd.current_dir(dir)
        .env("PLANO_HOME", dir.join("home"))
        .env("RUST_BACKTRACE", "1")
        .env_remove("PLANO_KEY_A")
        .env_remove("PLANO_KEY_B");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Two providers keyed by `$PLANO_KEY_A` and `${PLANO_KEY_B}`, one by a literal.
const KEYED: &str = "version: v0.3.0
listeners: [{type: model, name: l, port: 12000}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:9
    access_key: $PLANO_KEY_A
  - model: anthropic/claude
    base_url: http://127.0.0.1:9
    access_key: ${PLANO_KEY_B}
  - model: mistral/large
    base_url: http://127.0.0.1:9
    access_key: sk-literal
";

/// Every command whose output can be piped, as a user types it, with a config
/// that makes `validate` print on both streams.
fn commands(dir: &Path) -> Vec<Vec<&'static str>> {
    fs::write(dir.join("gw.yaml"), KEYED).unwrap();
    vec![
        vec!["--help"],
        vec!["--version"],
        vec!["validate", "gw.yaml"],
        vec!["validate", "--strict", "gw.yaml"],
        vec!["render", "gw.yaml", "-o", "out"],
        vec!["status"],
        vec!["logs"],
        vec!["down"],
        vec!["up", "--help"],
    ]
}

/// A pipe whose reader has already gone: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

#[test]
fn every_command_exits_quietly_when_its_stdout_reader_goes_away() {
    let dir = scratch("stdout");
    for args in commands(&dir) {
        let out: Output = planoai(&dir)
            .args(&args)
            .env("PLANO_KEY_A", "a")
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("backtrace") && !err.contains("Broken pipe"),
            "planoai {args:?}: {err}"
        );
        assert_ne!(out.status.code(), Some(101), "planoai {args:?} panicked");
    }
}

#[test]
fn every_command_exits_quietly_when_its_stderr_reader_goes_away() {
    let dir = scratch("stderr");
    for args in commands(&dir) {
        let out = planoai(&dir)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(closed_pipe())
            .output()
            .unwrap();
        // With stderr gone a panic's message is lost too; its exit code is not.
        assert_ne!(out.status.code(), Some(101), "planoai {args:?} panicked");
        assert!(
            out.status.code().is_some(),
            "planoai {args:?} died of a signal"
        );
    }
}

#[test]
fn validate_warns_about_each_unset_variable_and_strict_makes_them_errors() {
    let dir = scratch("unset");
    fs::write(dir.join("gw.yaml"), KEYED).unwrap();

    let out = planoai(&dir)
        .args(["validate", "gw.yaml"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for (var, line) in [("PLANO_KEY_A", 6), ("PLANO_KEY_B", 9)] {
        assert!(
            err.contains(&format!("warning: environment variable `{var}` is not set; `planoai up` refuses this config until it is")),
            "{err}"
        );
        assert!(err.contains(&format!("--> gw.yaml:{line}:5")), "{err}");
    }
    assert_eq!(err.matches("warning:").count(), 2, "{err}");
    assert!(
        text(&out.stdout).contains("gw.yaml: valid (3 providers, 2 warning(s))"),
        "{}",
        text(&out.stdout)
    );

    let strict = planoai(&dir)
        .args(["validate", "--strict", "gw.yaml"])
        .output()
        .unwrap();
    let err = text(&strict.stderr);
    assert_eq!(strict.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: environment variable `PLANO_KEY_A` is not set"),
        "{err}"
    );
    assert!(
        err.contains("error: environment variable `PLANO_KEY_B` is not set"),
        "{err}"
    );
    assert!(err.contains("gw.yaml: 2 error(s), 0 warning(s)"), "{err}");

    // `up` refuses it and starts nothing.
    let up = planoai(&dir).args(["up", "gw.yaml"]).output().unwrap();
    let err = text(&up.stderr);
    assert_eq!(up.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: environment variable `PLANO_KEY_A` is not set"),
        "{err}"
    );
    assert!(err.contains("nothing was started"), "{err}");
    assert!(!dir.join("home/run/state.json").exists());
}

#[test]
fn validate_with_an_env_file_reads_it_and_is_strict() {
    let dir = scratch("envfile");
    fs::write(dir.join("gw.yaml"), KEYED).unwrap();
    fs::write(
        dir.join("ci.env"),
        "PLANO_KEY_A=sk-from-file-a\nexport PLANO_KEY_B=\"sk-from-file-b\"\n",
    )
    .unwrap();
    let out = planoai(&dir)
        .args(["validate", "--env-file", "ci.env", "gw.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid (3 providers, 0 warning(s))"));

    fs::write(dir.join("partial.env"), "PLANO_KEY_A=sk-from-file-a\n").unwrap();
    let out = planoai(&dir)
        .args(["validate", "--env-file", "partial.env", "gw.yaml"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: environment variable `PLANO_KEY_B` is not set"),
        "{err}"
    );
    assert!(!err.contains("sk-from-file"), "a key leaked: {err}");

    let out = planoai(&dir)
        .args(["validate", "--env-file", "missing.env", "gw.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the env file missing.env"));
}

#[test]
fn validate_help_says_what_an_unset_variable_is() {
    let dir = scratch("help");
    let out = planoai(&dir).args(["validate", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    assert!(
        help.contains("unset environment variable ($VAR) is a warning here"),
        "{help}"
    );
    assert!(help.contains("--strict"), "{help}");
    assert!(help.contains("--env-file"), "{help}");
}
