use std::fs;

use anyhow::{Context, Result};

use crate::cli::RenderArgs;
use crate::{load, paths, render};

pub fn run(args: &RenderArgs) -> Result<i32> {
    let loaded = load::load_for_run(&args.config)?;
    fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let wasm = args.output.join("plano_filter.wasm");
    fs::copy(paths::filter_wasm()?, &wasm).context("cannot copy the filter")?;
    let wasm_path = match &args.wasm_path {
        Some(p) => p.clone(),
        None => fs::canonicalize(&wasm)?.display().to_string(),
    };
    let envoy_yaml = args.output.join("envoy.yaml");
    render::write_private(&envoy_yaml, render::render(&loaded, &wasm_path)?.as_bytes())?;
    println!(
        "wrote {} (owner-only: it holds access keys) and {}",
        envoy_yaml.display(),
        wasm.display()
    );
    Ok(0)
}
