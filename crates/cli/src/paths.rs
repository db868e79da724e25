//! Where things are: the state directory, Envoy, and the filter's .wasm.
//!
//! An installed `planoai` finds Envoy and the filter in `../share/plano/`
//! beside its binary (what `make setup` installs); one run from the source
//! tree finds them in the tree's `.venv` and `target/`. `PLANO_ENVOY` and
//! `PLANO_FILTER_WASM` override both.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

const SOURCE_TREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `$PLANO_HOME`, else `~/.plano`: the running gateway's files.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PLANO_HOME") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".plano")
}

pub fn run_dir() -> PathBuf {
    state_dir().join("run")
}

fn share_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("share").join("plano"))
}

fn first_existing(candidates: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    candidates.into_iter().find(|p| p.is_file())
}

fn venv_envoy(root: &Path) -> Option<PathBuf> {
    let lib = root.join(".venv").join("lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
}

pub fn envoy_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PLANO_ENVOY") {
        return Ok(PathBuf::from(p));
    }
    let found = first_existing(share_dir().map(|d| d.join("envoy")))
        .or_else(|| venv_envoy(Path::new(SOURCE_TREE)))
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                first_existing(std::env::split_paths(&path).map(|d| d.join("envoy")))
            })
        });
    match found {
        Some(p) => Ok(p),
        None => bail!("cannot find Envoy: run `make setup`, or set PLANO_ENVOY to an envoy binary"),
    }
}

pub fn filter_wasm() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PLANO_FILTER_WASM") {
        return Ok(PathBuf::from(p));
    }
    let found = first_existing(
        share_dir()
            .map(|d| d.join("plano_filter.wasm"))
            .into_iter()
            .chain([Path::new(SOURCE_TREE).join("target/wasm32-wasip1/release/plano_filter.wasm")]),
    );
    match found {
        Some(p) => Ok(p),
        None => bail!("cannot find the filter (plano_filter.wasm): run `make build`, or set PLANO_FILTER_WASM"),
    }
}

/// The system's CA bundle, for verifying providers' certificates.
pub fn ca_bundle() -> &'static str {
    "/etc/ssl/certs/ca-certificates.crt"
}

/// The Dockerfile the image is built from.
pub const DOCKERFILE: &str = include_str!("../../../docker/Dockerfile");
