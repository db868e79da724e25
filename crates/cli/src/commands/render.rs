use std::fs;

use anyhow::{bail, Context, Result};

use crate::cli::RenderArgs;
use crate::{load, paths, render};

pub fn run(args: &RenderArgs) -> Result<i32> {
    let loaded = load::load_for_run(&args.config)?;
    if args.output.exists() && !args.output.is_dir() {
        bail!(
            "{} is not a directory: -o names the directory the files are written to",
            args.output.display()
        );
    }
    fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let wasm = args.output.join("plano_filter.wasm");
    fs::copy(paths::filter_wasm()?, &wasm).context("cannot copy the filter")?;
    let wasm_path = match (&args.wasm_path, args.kubernetes) {
        (Some(p), _) => p.clone(),
        (None, true) => render::SIDECAR_WASM.to_string(),
        (None, false) => fs::canonicalize(&wasm)?.display().to_string(),
    };
    // Envoy finds lds.yaml, cds.yaml and the key files beside envoy.yaml:
    // in the sidecar or a container, where they are mounted.
    let config_dir = match (&args.config_dir, args.kubernetes) {
        (Some(dir), _) => dir.clone(),
        (None, true) => render::SIDECAR_CONFIG_DIR.to_string(),
        (None, false) => fs::canonicalize(&args.output)?.display().to_string(),
    };
    let probe = args.kubernetes.then_some(render::PROBE_PORT);
    let rendered = render::render(&loaded, &wasm_path, &config_dir, probe)?;
    rendered.write(&args.output)?;
    outln!(
        "wrote {} (with lds.yaml and cds.yaml beside it) and {} key file(s) (owner-only: Envoy reads the access keys from them), and {}",
        args.output.join("envoy.yaml").display(),
        rendered.keys.len(),
        wasm.display()
    )?;
    if args.kubernetes {
        let manifest = args.output.join("kubernetes.yaml");
        render::write_private(&manifest, render::kubernetes(&rendered)?.as_bytes())?;
        outln!(
            "wrote {} (owner-only: its Secret holds access keys); apply it with:",
            manifest.display()
        )?;
        outln!(
            "  kubectl create configmap plano-filter --from-file={}",
            wasm.display()
        )?;
        outln!("  kubectl apply -f {}", manifest.display())?;
    }
    Ok(0)
}
