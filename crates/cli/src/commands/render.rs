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
    let wasm_path = match (&args.wasm_path, args.kubernetes) {
        (Some(p), _) => p.clone(),
        (None, true) => render::SIDECAR_WASM.to_string(),
        (None, false) => fs::canonicalize(&wasm)?.display().to_string(),
    };
    let probe = args.kubernetes.then_some(render::PROBE_PORT);
    let envoy_yaml = render::render_with_probe(&loaded, &wasm_path, probe)?;
    let envoy_path = args.output.join("envoy.yaml");
    render::write_private(&envoy_path, envoy_yaml.as_bytes())?;
    println!(
        "wrote {} (owner-only: it holds access keys) and {}",
        envoy_path.display(),
        wasm.display()
    );
    if args.kubernetes {
        let manifest = args.output.join("kubernetes.yaml");
        render::write_private(&manifest, render::kubernetes(&envoy_yaml)?.as_bytes())?;
        println!(
            "wrote {} (owner-only: its Secret holds access keys); apply it with:",
            manifest.display()
        );
        println!(
            "  kubectl create configmap plano-filter --from-file={}",
            wasm.display()
        );
        println!("  kubectl apply -f {}", manifest.display());
    }
    Ok(0)
}
