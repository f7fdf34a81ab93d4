//! `tessera verilog` end to end: emitted files, lint, synthesis report, and refused specs.

use std::path::PathBuf;
mod common;

use common::tessera;

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("verilog")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `tessera verilog --accel accel -o dir --json` with `extra` arguments: it succeeds, and its
/// report lints clean.
fn verilog_report(accel: &str, dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let d = dir.to_str().unwrap();
    let args = [&["verilog", "--accel", accel, "-o", d, "--json"], extra].concat();
    let out = tessera(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lint"], "verilator --lint-only -Wall: no warnings");
    report
}

fn tools_present() -> bool {
    let present = ["verilator", "yosys"].iter().all(|t| {
        std::process::Command::new(t).arg("-V").output().is_ok()
            || std::process::Command::new(t)
                .arg("--version")
                .output()
                .is_ok()
    });
    if !present && std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("verilator and yosys are required under CI=true (scripts/setup installs them)");
    }
    present
}

#[test]
fn tiny_engine_lints_synthesises_and_fits_its_budget() {
    if !tools_present() {
        eprintln!("skipped: verilator or yosys missing (run scripts/setup)");
        return;
    }
    let d = dir("tiny");
    let report = verilog_report("tiny", &d, &[]);
    assert_eq!(report["target"], "xilinx_ultrascale_plus");
    assert_eq!(report["fits"], true);
    let r = &report["resources"];
    // 16 lane multipliers at least; every PE's operand banks map to block or distributed RAM.
    assert!(r["dsp"].as_u64().unwrap() >= 16, "{r}");
    assert!(r["ff"].as_u64().unwrap() > 0 && r["lut"].as_u64().unwrap() > 0);
    assert!(r["bram36"].as_f64().unwrap() + r["lut_memory"].as_f64().unwrap() > 0.0);
    let files = std::fs::read_to_string(d.join("rtl/files.f")).unwrap();
    assert!(files.lines().any(|f| f == "top.v"));
    for f in files.lines() {
        let text = std::fs::read_to_string(d.join("rtl").join(f)).unwrap();
        assert!(
            text.starts_with(&format!("module {}(", f.trim_end_matches(".v"))),
            "{f}"
        );
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("resources.json")).unwrap()).unwrap();
    assert_eq!(saved, report);
}

#[test]
fn a_packing_engine_lints_and_synthesises() {
    // tiny with every precision at two MACs per DSP (small banks keep synthesis short).
    if !tools_present() {
        eprintln!("skipped: verilator or yosys missing (run scripts/setup)");
        return;
    }
    let d = dir("packed");
    let spec = d.join("tiny-packed.toml");
    std::fs::write(
        &spec,
        tessera_spec_text().replace("macs_per_dsp = 1.0", "macs_per_dsp = 2.0"),
    )
    .unwrap();
    let report = verilog_report(spec.to_str().unwrap(), &d, &["--bank-words", "4"]);
    assert_eq!(report["fits"], true);
    // Two columns per lane: dense items of two columns, so at least two segments.
    assert_eq!(report["engine"]["segments"], 2);
    assert!(report["resources"]["dsp"].as_u64().unwrap() >= 16);
}

#[test]
fn specs_the_generator_cannot_build_are_refused_by_key() {
    let d = dir("refused");
    let out = tessera(&[
        "verilog",
        "--accel",
        "u280",
        "-o",
        d.to_str().unwrap(),
        "--no-tools",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("examples/accelerators/u280.toml"), "{err}");
    // Its int8-activation precisions pack two MACs per DSP and are built; the fp16 ones are not.
    assert!(
        (4..7).all(|i| err.contains(&format!("matrix.precisions[{i}]"))),
        "{err}"
    );
    assert!(
        (0..4).all(|i| !err.contains(&format!("matrix.precisions[{i}]"))),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let tiny = tessera_spec_text();
    for (from, to, key) in [
        ("chain = 4", "chain = 3", "matrix.chain"),
        (
            "pipeline_depth = 12",
            "pipeline_depth = 10",
            "matrix.pipeline_depth",
        ),
        (
            "nm = [2, 4, 8, 16]",
            "nm = [3, 4, 8, 16]",
            "matrix.sparse.nm[0]",
        ),
        (
            "dequant_cycles_per_group = 2",
            "dequant_cycles_per_group = 0",
            "matrix.dequant_cycles_per_group",
        ),
    ] {
        let path = d.join(format!("{}.toml", key.replace(['.', '[', ']'], "_")));
        std::fs::write(&path, tiny.replace(from, to)).unwrap();
        let out = tessera(&[
            "verilog",
            "--accel",
            path.to_str().unwrap(),
            "-o",
            d.to_str().unwrap(),
            "--no-tools",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {err}");
        assert!(
            err.contains(key) && err.contains(path.to_str().unwrap()),
            "{key}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = tessera(&[
        "verilog",
        "--accel",
        "tiny",
        "-o",
        d.to_str().unwrap(),
        "--bank-words",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bank-words 3"));
}

#[test]
fn no_tools_writes_only_the_verilog() {
    let d = dir("no-tools");
    let out = tessera(&[
        "verilog",
        "--accel",
        "tiny",
        "-o",
        d.to_str().unwrap(),
        "--no-tools",
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("resources.json")).unwrap()).unwrap();
    assert!(saved["resources"].is_null() && saved["lint"].is_null());
    assert_eq!(saved["engine"]["pipeline_depth"], 12);
    assert!(d.join("rtl/top.v").exists());
}

fn tessera_spec_text() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/accelerators/tiny.toml"),
    )
    .unwrap()
}
