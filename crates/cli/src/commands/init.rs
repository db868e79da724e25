use std::fmt::Write as _;
use std::fs;

use anyhow::{bail, Context, Result};
use plano_core::resolve::{closest, WELL_KNOWN_PROVIDERS};

use crate::cli::InitArgs;

/// A model each well-known provider offers, for `--provider NAME`.
const MODELS: &[(&str, &str)] = &[
    ("openai", "gpt-4o"),
    ("anthropic", "claude-3-5-sonnet-latest"),
    ("mistral", "mistral-large-latest"),
    ("groq", "llama-3.3-70b-versatile"),
    ("deepseek", "deepseek-chat"),
    ("gemini", "gemini-2.0-flash"),
    ("xai", "grok-2-latest"),
    ("together_ai", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
];

pub fn run(args: &InitArgs) -> Result<i32> {
    let models = args
        .provider
        .iter()
        .map(|p| model_for(p))
        .collect::<Result<Vec<_>>>()?;
    let text = starter(&models);
    if args.output.exists() && !args.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            args.output.display()
        );
    }
    fs::write(&args.output, text)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    outln!(
        "wrote {}; check it with `planoai validate {0}`, start it with `planoai up {0}`",
        args.output.display()
    )?;
    Ok(0)
}

/// `openai` -> `openai/gpt-4o`; `openai/gpt-4o-mini` stays as written.
fn model_for(provider: &str) -> Result<String> {
    let name = provider.split('/').next().unwrap_or(provider);
    if !WELL_KNOWN_PROVIDERS.iter().any(|(p, _, _)| *p == name) {
        let names = WELL_KNOWN_PROVIDERS.iter().map(|p| p.0);
        let hint =
            closest(name, names.clone()).map_or(String::new(), |m| format!("did you mean `{m}`? "));
        bail!(
            "`{name}` is not a provider `init` knows; {hint}known: {}",
            names.collect::<Vec<_>>().join(", ")
        );
    }
    Ok(
        match (provider.contains('/'), MODELS.iter().find(|m| m.0 == name)) {
            (false, Some((_, model))) => format!("{name}/{model}"),
            _ => provider.to_string(),
        },
    )
}

fn starter(models: &[String]) -> String {
    let mut out = String::from(
        "# yaml-language-server: $schema=plano.schema.json
# A Plano gateway, written by `planoai init`. Editors with YAML support
# complete and check this file once the schema is beside it:
#   planoai schema > plano.schema.json
version: v0.3.0
listeners:
  - type: model
    name: model_listener
    port: 12000                 # clients send OpenAI chat completions here
model_providers:
",
    );
    for (i, model) in models.iter().enumerate() {
        let provider = model.split('/').next().unwrap_or_default();
        let var = format!("{}_API_KEY", provider.to_ascii_uppercase());
        let _ = writeln!(out, "  - model: {model}");
        let _ = writeln!(
            out,
            "    access_key: ${var}      # from the environment, or a .env beside this file"
        );
        if provider == "gemini" {
            let _ = writeln!(
                out,
                "    format: gemini              # Gemini's own API; without it, its OpenAI-compatible one"
            );
        }
        if i == 0 {
            let _ = writeln!(
                out,
                "    default: true               # for requests naming no configured model"
            );
            let _ = writeln!(out, "    retry_policy:");
            if models.len() > 1 {
                let _ = writeln!(out, "      fallback_models: [{}]", models[1..].join(", "));
                let _ = writeln!(
                    out,
                    "      default_strategy: different_provider   # or same_model, same_provider"
                );
            } else {
                let _ = writeln!(
                    out,
                    "      default_strategy: same_model   # add providers to fail over to them"
                );
            }
            out.push_str(
                "      default_max_attempts: 2    # retries, the original attempt aside
      on_status_codes:
        - codes: [429, \"500-504\"]
      on_timeout: { max_attempts: 1 }
      backoff: { base_ms: 100, max_ms: 5000 }   # applies to every retry
      retry_after_handling: { max_retry_after_seconds: 300 }
",
            );
        }
    }
    out
}
