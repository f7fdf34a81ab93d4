//! Helpers shared by the end-to-end tests.

use std::process::{Command, Output};

/// Runs the `tessera` binary with `args` from the repository root.
pub fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}
