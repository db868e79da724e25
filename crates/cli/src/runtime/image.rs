//! Building the gateway's container image offline, from this machine's Envoy.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::engine::docker;
use super::{CONTAINER_WASM, IMAGE};
use crate::output::Progress;
use crate::paths;

/// Builds the gateway image from this machine's Envoy, its glibc, the CA
/// bundle and the filter. `scratch` needs no registry; any other base (such
/// as envoyproxy/envoy) gets only the filter and keeps its own Envoy.
pub fn build_image(base_image: &str) -> Result<()> {
    let stage = std::env::temp_dir().join(format!("plano-image-{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    let result = stage_and_build(&stage, base_image);
    let _ = fs::remove_dir_all(&stage);
    result
}

fn stage_and_build(stage: &Path, base_image: &str) -> Result<()> {
    let staging = Progress::on_terminal();
    staging.show("staging Envoy, the libraries it links, the CA bundle and the filter");
    let full = stage.join("rootfs");
    let filter_only = stage.join("rootfs-filter");
    let envoy = fs::canonicalize(paths::envoy_binary()?)?;
    let wasm = paths::filter_wasm()?;
    for root in [&full, &filter_only] {
        copy_into(root, &wasm, Path::new(CONTAINER_WASM))?;
        fs::create_dir_all(root.join("etc/plano"))?;
        fs::create_dir_all(root.join("tmp"))?;
    }
    copy_into(&full, &envoy, Path::new("/usr/local/bin/envoy"))?;
    copy_into(
        &full,
        Path::new(paths::ca_bundle()),
        Path::new(paths::ca_bundle()),
    )?;
    let ldd = Command::new("ldd")
        .arg(&envoy)
        .output()
        .context("cannot run ldd")?;
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(library_path)
    {
        copy_into(&full, Path::new(&lib), Path::new(&lib))?;
    }
    fs::write(stage.join("Dockerfile"), paths::DOCKERFILE)?;
    let rootfs = if base_image == "scratch" {
        "rootfs"
    } else {
        "rootfs-filter"
    };
    // At a terminal, docker shows its own progress; elsewhere its output is
    // kept, and shown only if the build fails.
    drop(staging);
    let progress = Progress::on_terminal();
    let mut build = Command::new("docker");
    build
        .args(["build", "-t", IMAGE, "--build-arg"])
        .arg(format!("BASE_IMAGE={base_image}"))
        .arg("--build-arg")
        .arg(format!("ROOTFS={rootfs}"))
        .arg(stage);
    if progress.is_on() {
        let status = build.status().context("cannot run `docker build`")?;
        if !status.success() {
            bail!("docker build failed");
        }
    } else {
        let out = build.output().context("cannot run `docker build`")?;
        if !out.status.success() {
            bail!(
                "docker build failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let size = docker(&["image", "inspect", "-f", "{{.Size}}", IMAGE])?;
    let bytes: u64 = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    outln!("built {IMAGE} ({:.1} MB)", bytes as f64 / 1e6)?;
    Ok(())
}

/// The resolved path in one line of `ldd` output, if it names a file.
fn library_path(line: &str) -> Option<String> {
    let line = line.trim();
    let path = match line.split_once("=>") {
        Some((_, rest)) => rest.split_whitespace().next()?,
        None => line.split_whitespace().next()?,
    };
    path.starts_with('/').then(|| path.to_string())
}

fn copy_into(root: &Path, from: &Path, to: &Path) -> Result<()> {
    let dest = root.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, &dest)
        .with_context(|| format!("cannot copy {} into the image", from.display()))?;
    Ok(())
}
