//! Golden-file tests: the exact output of representative commands, byte for byte. They catch
//! unintended changes to numbers, JSON field names and rendered diagnostics, and prove runs are
//! deterministic. After an intended change, regenerate with `TESSERA_BLESS=1 cargo test --test
//! golden` and review the diff.

use std::path::PathBuf;
use std::process::Command;

/// Runs `tessera args` and compares stdout (or stderr for failing commands) with
/// `tests/golden/<name>`.
fn check(name: &str, args: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(&root)
        .output()
        .expect("the binary runs");
    let actual = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    let path = root.join("tests/golden").join(name);
    if std::env::var_os("TESSERA_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run with TESSERA_BLESS=1", path.display()));
    assert!(
        expected == actual,
        "{name} differs from {}:\n--- expected\n{}\n--- actual\n{}",
        path.display(),
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(&actual)
    );
}

#[test]
fn tiny_llama_prefill_graph_json() {
    check(
        "graph-tiny-llama-prefill.json",
        &["graph", "--model", "tiny-llama", "--seq", "8", "--json"],
    );
}

#[test]
fn gpt2_decode_graph_table() {
    check(
        "graph-gpt2-decode.txt",
        &[
            "graph",
            "--model",
            "gpt2",
            "--phase",
            "decode",
            "--context",
            "100",
        ],
    );
}

#[test]
fn tiny_llama_run_json() {
    check(
        "run-tiny-llama-tiny.json",
        &[
            "run",
            "--model",
            "tiny-llama",
            "--accel",
            "tiny",
            "--prefill",
            "16",
            "--decode",
            "4",
            "--json",
        ],
    );
}

#[test]
fn llama2_run_table() {
    check("run-llama2-7b-u280.txt", &["run", "--decode", "32", "-v"]);
}

#[test]
fn diagnostics_of_a_bad_accelerator() {
    check(
        "check-bad-accelerator.txt",
        &["check", "tests/golden/bad-accelerator.toml"],
    );
}

#[test]
fn tiny_llama_simulated_runs_at_batch_one_and_two() {
    // Compiled prefill and decode programs in the simulator: pins their cycles, one sequence and
    // two (a batched decode step's products of two rows and its sequences' attention streams).
    for batch in ["1", "2"] {
        check(
            &format!("run-tiny-llama-u280-sim-b{batch}.txt"),
            &[
                "run",
                "--model",
                "tiny-llama",
                "--fidelity",
                "sim",
                "--batch",
                batch,
                "--prefill",
                "32",
                "--decode",
                "2",
            ],
        );
    }
}
