//! The `docker` command, which every Docker step runs through: a leaf the
//! container, image and state modules all use.

use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::{CONTAINER, IMAGE};

pub fn docker(args: &[&str]) -> Result<std::process::Output> {
    Command::new("docker")
        .args(args)
        .output()
        .context("cannot run `docker`: is Docker installed?")
}

pub fn image_exists() -> bool {
    docker(&["image", "inspect", IMAGE]).is_ok_and(|o| o.status.success())
}

/// Removes the gateway's container; true when there was one.
pub fn remove_container() -> bool {
    // `docker rm -f` succeeds for a container that does not exist, too.
    let exists = docker(&["container", "inspect", CONTAINER]).is_ok_and(|o| o.status.success());
    exists && docker(&["rm", "-f", CONTAINER]).is_ok_and(|o| o.status.success())
}

pub fn container_running() -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", CONTAINER])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false)
}
