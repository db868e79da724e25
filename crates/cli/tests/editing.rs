//! Issue 17 through the real binary: every mistake of a config in one run,
//! with its line and a suggestion for a typo; defaults where a user expects
//! one; `init` writes a config that validates.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("planoai-editing-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn planoai(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_planoai"))
        .args(args)
        .current_dir(dir)
        .env("PLANO_HOME", dir.join("home"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("GROQ_API_KEY")
        .output()
        .expect("run planoai")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Three structural mistakes (a wrong type, a misspelt value, a misspelt
/// field) and three semantic ones (a bad URL, a zero timeout, max below base).
const SIX_MISTAKES: &str = "version: v0.3.0
listeners:
  - type: model
    name: l
    port: twelve
model_providers:
  - model: openai/gpt-4o
    base_url: ftp://nowhere
    timeout_ms: 0
    retry_policy:
      default_strategy: same_modle
      fallback_modles: [anthropic/claude]
      backoff:
        base_ms: 900
        max_ms: 100
  - model: anthropic/claude
    base_url: http://127.0.0.1:9
";

#[test]
fn three_structural_and_three_semantic_mistakes_are_all_reported_in_one_run() {
    let dir = scratch("six");
    fs::write(dir.join("gw.yaml"), SIX_MISTAKES).unwrap();
    let out = planoai(&["validate", "gw.yaml"], &dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for (message, place, field) in [
        (
            "invalid type: string \"twelve\", expected u16",
            "gw.yaml:5:11",
            "listeners[0].port",
        ),
        (
            "unknown variant `same_modle`",
            "gw.yaml:11:7",
            "model_providers[0].retry_policy.default_strategy",
        ),
        (
            "unknown field `fallback_modles`",
            "gw.yaml:12:7",
            "model_providers[0].retry_policy.fallback_modles",
        ),
        (
            "base_url `ftp://nowhere` must start with http:// or https://",
            "gw.yaml:8:5",
            "model_providers[0].base_url",
        ),
        (
            "must be greater than 0",
            "gw.yaml:9:5",
            "model_providers[0].timeout_ms",
        ),
        (
            "100 is below base_ms (900)",
            "gw.yaml:15:9",
            "model_providers[0].retry_policy.backoff.max_ms",
        ),
    ] {
        let at = err
            .find(&format!("error: {message}"))
            .unwrap_or_else(|| panic!("missing {message:?} in\n{err}"));
        let own = &err[at..];
        let own = &own[..own[1..].find("\nerror:").map_or(own.len(), |e| e + 1)];
        assert!(
            own.contains(&format!("--> {place}")),
            "{message}: no {place} in\n{own}"
        );
        assert!(
            own.contains(&format!("field: {field}")),
            "{message}: no {field} in\n{own}"
        );
    }
    assert!(err.contains("gw.yaml: 6 error(s), 0 warning(s)"), "{err}");
    // Typos get the closest valid name, for a value as for a field.
    assert!(err.contains("help: did you mean `same_model`?"), "{err}");
    assert!(
        err.contains("help: did you mean `fallback_models`?"),
        "{err}"
    );
}

#[test]
fn backoff_without_apply_to_waits_before_every_retry() {
    let dir = scratch("backoff");
    fs::write(
        dir.join("gw.yaml"),
        "version: v0.3.0
listeners: [{type: model, name: l, port: 12000}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:9
    retry_policy:
      backoff: {base_ms: 250}
  - model: anthropic/claude
    base_url: http://127.0.0.1:9
",
    )
    .unwrap();
    let out = planoai(&["validate", "gw.yaml"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = planoai(&["render", "gw.yaml", "-o", "out"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rendered = fs::read_to_string(dir.join("out/lds.yaml")).unwrap();
    assert!(
        rendered.contains(r#"\"backoff\":{\"apply_to\":\"global\",\"base_ms\":250"#),
        "{rendered}"
    );
}

#[test]
fn init_writes_a_commented_config_that_validates() {
    let dir = scratch("init");
    for (args, file, models) in [
        (
            vec![],
            "plano.yaml",
            vec!["openai/gpt-4o", "anthropic/claude-3-5-sonnet-latest"],
        ),
        (
            vec![
                "--provider",
                "openai/gpt-4o-mini",
                "--provider",
                "groq",
                "-o",
                "two.yaml",
            ],
            "two.yaml",
            vec!["openai/gpt-4o-mini", "groq/llama-3.3-70b-versatile"],
        ),
        (
            vec!["--provider", "anthropic", "-o", "one.yaml"],
            "one.yaml",
            vec!["anthropic/claude-3-5-sonnet-latest"],
        ),
        (
            vec!["--provider", "gemini", "-o", "gemini.yaml"],
            "gemini.yaml",
            vec!["gemini/gemini-2.0-flash"],
        ),
    ] {
        let out = planoai(&[&["init"], args.as_slice()].concat(), &dir);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            text.lines().filter(|l| l.contains('#')).count() >= 5,
            "{text}"
        );
        for model in &models {
            assert!(text.contains(&format!("- model: {model}")), "{text}");
        }
        // Gemini's own API, not its OpenAI-compatible endpoint.
        assert_eq!(
            text.contains("format: gemini"),
            file == "gemini.yaml",
            "{text}"
        );
        // Valid as written, keys unset; and strictly, once the keys are at hand.
        let out = planoai(&["validate", file], &dir);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(!stderr(&out).contains("error:"), "{}", stderr(&out));
        fs::write(
            dir.join("keys.env"),
            "OPENAI_API_KEY=a\nANTHROPIC_API_KEY=b\nGROQ_API_KEY=c\nGEMINI_API_KEY=d\n",
        )
        .unwrap();
        let out = planoai(&["validate", "--env-file", "keys.env", file], &dir);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    }
    // It does not overwrite a config, and names what it cannot write.
    let again = planoai(&["init"], &dir);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("plano.yaml exists; pass --force"),
        "{}",
        stderr(&again)
    );
    let typo = planoai(&["init", "--provider", "opnai", "-o", "x.yaml"], &dir);
    assert!(
        stderr(&typo).contains("did you mean `openai`?"),
        "{}",
        stderr(&typo)
    );
}
