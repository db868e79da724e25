//! What more than one of the CLI's test files needs: Envoy from the
//! project's .venv, and a rendered config Envoy can check in one file.

// Each test file uses its share of these.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The Envoy `make setup` installs into the project's .venv.
pub fn envoy() -> PathBuf {
    fs::read_dir(Path::new(WORKSPACE).join(".venv/lib"))
        .expect("no .venv: run `make setup`")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
        .expect("no Envoy in .venv: run `make setup`")
}

/// The bootstrap rendered in `dir` with lds.yaml's listeners and cds.yaml's
/// clusters as static resources (`envoy --mode validate` does not read the
/// watched files), each file's text passed through `fix` first; written to
/// `dir/static.yaml`.
pub fn as_static(dir: &Path, fix: impl Fn(String) -> String) -> PathBuf {
    use serde_yaml::Value;
    let read = |name: &str| -> Value {
        serde_yaml::from_str(&fix(fs::read_to_string(dir.join(name)).unwrap())).unwrap()
    };
    let resources = |name: &str| -> Value {
        let mut list = read(name)["resources"].clone();
        for item in list.as_sequence_mut().unwrap() {
            item.as_mapping_mut().unwrap().remove("@type");
        }
        list
    };
    let mut bootstrap = read("envoy.yaml");
    let map = bootstrap.as_mapping_mut().unwrap();
    assert!(map.remove("dynamic_resources").is_some());
    // The bootstrap's own static resources (the key secrets) stay.
    let mut statics = match map.remove("static_resources") {
        Some(Value::Mapping(m)) => m,
        _ => serde_yaml::Mapping::new(),
    };
    statics.insert("listeners".into(), resources("lds.yaml"));
    statics.insert("clusters".into(), resources("cds.yaml"));
    map.insert("static_resources".into(), statics.into());
    let path = dir.join("static.yaml");
    fs::write(&path, serde_yaml::to_string(&bootstrap).unwrap()).unwrap();
    path
}

/// A fresh directory for one test, named by its file's `kind` and `name`.
pub fn scratch_dir(kind: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("planoai-{kind}-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `planoai ARGS` run in `dir`, with its own state directory there.
pub fn planoai_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_planoai"))
        .args(args)
        .current_dir(dir)
        .env("PLANO_HOME", dir.join("home"))
        .output()
        .unwrap()
}

/// All a command printed, stdout then stderr.
pub fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A config's first lines, before its providers.
pub const HEAD: &str = "version: v0.3.0
listeners: [{type: model, name: l, port: 12000}]
model_providers:
";
