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

/// Runs a command that must succeed and print one JSON value; returns it.
#[allow(dead_code)] // Not every test crate uses every helper.
pub fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

/// Runs a command that must fail cleanly (exit 1, no panic); returns its stderr.
#[allow(dead_code)] // Not every test crate uses every helper.
pub fn fails(args: &[&str]) -> String {
    let out = tessera(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should exit 1: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    stderr
}
