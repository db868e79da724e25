//! A restart that can be undone: the running gateway's files are kept until
//! the new gateway answers, and started again if it does not.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::state::{Mode, State};
use super::{docker, native};
use crate::live;
use crate::paths;

/// Files beside the config directory that a gateway runs on.
const RUN_FILES: [&str; 2] = ["plano_filter.wasm", "plan.json"];

/// What the running gateway was started from, kept aside.
pub struct Previous {
    state: State,
    kept: PathBuf,
}

impl Previous {
    /// Keeps a copy of the files the running gateway (`state`) runs on.
    pub fn keep(state: State) -> Result<Previous> {
        let kept = paths::run_dir().join("previous");
        let _ = fs::remove_dir_all(&kept);
        copy_dir(&live::config_dir(), &kept.join("config"))
            .context("cannot keep the running gateway's config aside")?;
        for name in RUN_FILES {
            let from = paths::run_dir().join(name);
            if from.exists() {
                fs::copy(&from, kept.join(name))
                    .with_context(|| format!("cannot keep {}", from.display()))?;
            }
        }
        Ok(Previous { state, kept })
    }

    /// The new gateway runs: the kept files go.
    pub fn forget(self) {
        let _ = fs::remove_dir_all(&self.kept);
    }

    /// Puts the kept files back and starts the previous gateway on them.
    pub fn restore(self) -> Result<()> {
        let launch = self
            .state
            .launch
            .clone()
            .context("the previous gateway's launch settings were not recorded")?;
        let config = live::config_dir();
        let _ = fs::remove_dir_all(&config);
        fs::rename(self.kept.join("config"), &config)
            .with_context(|| format!("cannot put back {}", config.display()))?;
        for name in RUN_FILES {
            let kept = self.kept.join(name);
            if kept.exists() {
                fs::rename(&kept, paths::run_dir().join(name))?;
            }
        }
        let _ = fs::remove_dir_all(&self.kept);
        match launch.mode {
            // The Envoy it ran, whatever this `up` was told to use.
            Mode::Native => native::spawn(&self.state.config, &launch.envoy_path(), launch, false),
            Mode::Docker => docker::run(&self.state.config, launch),
        }
    }
}

/// Copies the config directory (its files, and its key directory's),
/// owner-only like the original.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
