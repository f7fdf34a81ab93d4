//! Sweeps end to end: expansion, resume after a killed run, shards and merge, and bad specs.

use std::path::PathBuf;
mod common;

use common::tessera;

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("sweep")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SPEC: &str = r#"
[base]
model = "tiny-llama"
accel = "u280"
compression = "w4a8-g128"
prefill = 32
decode = 4

[axes]
"accel.matrix.rows" = [4, 8, 16]
"compression.weights.bits" = [4, 8]
"scenario.batch" = [1, 2]
"#;

fn write(d: &std::path::Path, name: &str, text: &str) -> String {
    let p = d.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn ok(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn records(path: &str) -> Vec<serde_json::Value> {
    let mut r: Vec<serde_json::Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    r.sort_by_key(|v| v["index"].as_u64());
    r
}

#[test]
fn grid_runs_every_point_once() {
    let d = dir("grid");
    let spec = write(&d, "spec.toml", SPEC);
    let out = d.join("r.jsonl").display().to_string();
    ok(&["sweep", &spec, "-o", &out, "-q"]);
    let r = records(&out);
    assert_eq!(r.len(), 12);
    for (i, rec) in r.iter().enumerate() {
        assert_eq!(rec["index"], i as u64);
        assert!(
            rec["summary"]["decode_tokens_per_s"].as_f64().unwrap() > 0.0,
            "{rec}"
        );
    }
    // Last axis fastest, axes in key order.
    assert_eq!(r[1]["params"]["scenario.batch"], 2);
    assert_eq!(r[2]["params"]["compression.weights.bits"], 8);
    assert_eq!(r[4]["params"]["accel.matrix.rows"], 8);
    // More PE rows, more DSPs.
    assert!(r[0]["summary"]["dsps"].as_u64() < r[11]["summary"]["dsps"].as_u64());
    // A rerun finds nothing to do and leaves the file as it was.
    let before = std::fs::read(&out).unwrap();
    assert!(ok(&["sweep", &spec, "-o", &out]).contains("0 points run"));
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn accelerator_prices_sweep_into_cost_efficiency() {
    // The base accelerator quotes a price; an axis varies it.
    let d = dir("price");
    let accel = tessera_spec::accel::Accelerator::preset_text("u280")
        .unwrap()
        .replacen("\n[matrix]", "price_usd = 8000.0\n\n[matrix]", 1);
    let accel = write(&d, "priced.toml", &accel);
    let spec = format!(
        "[base]\nmodel = \"tiny-llama\"\naccel = {accel:?}\ncompression = \"w4a8-g128\"\n\
         prefill = 32\ndecode = 4\n\n[axes]\n\"accel.price_usd\" = [4000.0, 8000.0]\n"
    );
    let spec = write(&d, "spec.toml", &spec);
    let out = d.join("r.jsonl").display().to_string();
    ok(&["sweep", &spec, "-o", &out, "-q"]);
    let r = records(&out);
    let price = |i: usize| r[i]["summary"]["price_usd"].as_f64();
    assert_eq!((price(0), price(1)), (Some(4000.0), Some(8000.0)));
    let report = d.join("report");
    ok(&["report", &out, "-o", &report.display().to_string(), "-q"]);
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("tok/s per $1k"), "{md}");
    let csv = std::fs::read_to_string(report.join("results.csv")).unwrap();
    // The same tokens/s at half the price: twice the cost efficiency.
    let cost = |line: &str| -> f64 { line.split(',').rev().nth(1).unwrap().parse().unwrap() };
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    let ratio = cost(rows[0]) / cost(rows[1]);
    assert!((ratio - 2.0).abs() < 1e-9, "{csv}");
}

#[test]
fn resume_after_a_killed_run_gives_the_same_records() {
    let d = dir("resume");
    let spec = write(&d, "spec.toml", SPEC);
    let full = d.join("full.jsonl").display().to_string();
    ok(&["sweep", &spec, "-o", &full, "-q"]);
    // A killed run: header, three whole records and a torn fourth line.
    let text = std::fs::read_to_string(&full).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let killed = d.join("killed.jsonl").display().to_string();
    std::fs::write(
        &killed,
        format!(
            "{}\n{}\n{}\n{}\n{}",
            lines[0],
            lines[1],
            lines[2],
            lines[3],
            &lines[4][..20]
        ),
    )
    .unwrap();
    ok(&["sweep", &spec, "-o", &killed, "-q"]);
    assert_eq!(records(&killed), records(&full));
}

#[test]
fn shards_merge_to_the_unsharded_run() {
    let d = dir("shards");
    let spec = write(&d, "spec.toml", SPEC);
    let full = d.join("full.jsonl").display().to_string();
    ok(&["sweep", &spec, "-o", &full, "-q"]);
    let mut shards = Vec::new();
    for i in 0..3 {
        let s = d.join(format!("s{i}.jsonl")).display().to_string();
        ok(&["sweep", &spec, "-o", &s, "--shard", &format!("{i}/3"), "-q"]);
        assert_eq!(records(&s).len(), 4);
        shards.push(s);
    }
    let merged = d.join("merged.jsonl").display().to_string();
    let mut args = vec!["merge"];
    args.extend(shards.iter().map(|s| s.as_str()));
    args.extend(["-o", &merged, "-q"]);
    ok(&args);
    let same = std::fs::read(&merged).unwrap() == std::fs::read(&full).unwrap();
    assert!(same, "the merged file differs from the unsharded one");
}

#[test]
fn bad_specs_and_foreign_results_are_explained() {
    let d = dir("bad");
    let fails = |args: &[&str]| {
        let out = tessera(args);
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
        e
    };
    let spec = write(
        &d,
        "path.toml",
        &SPEC.replace("accel.matrix.rows", "accel.matrix.rowz"),
    );
    let e = fails(&["check", &spec]);
    assert!(
        e.contains("matrix.rowz") && e.contains("does not exist"),
        "{e}"
    );
    let spec = write(&d, "type.toml", &SPEC.replace("[4, 8, 16]", "[\"four\"]"));
    let e = fails(&["check", &spec]);
    assert!(
        e.contains("has type string, but the key holds a integer"),
        "{e}"
    );
    let spec = write(&d, "empty.toml", &SPEC[..SPEC.find("[axes]").unwrap() + 7]);
    let e = fails(&["check", &spec]);
    assert!(e.contains("no axes"), "{e}");
    let spec = write(
        &d,
        "root.toml",
        &SPEC.replace("scenario.batch", "hardware.batch"),
    );
    assert!(fails(&["check", &spec]).contains("names no known document"));
    let good = write(&d, "good.toml", SPEC);
    let other = write(&d, "other.toml", &SPEC.replace("decode = 4", "decode = 5"));
    let out = d.join("r.jsonl").display().to_string();
    ok(&["sweep", &good, "-o", &out, "--shard", "0/6", "-q"]);
    let before = std::fs::read(&out).unwrap();
    let e = fails(&["sweep", &other, "-o", &out]);
    assert!(e.contains("different sweep spec"), "{e}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "results already written are untouched"
    );
    assert!(fails(&["sweep", &good, "-o", &out, "--shard", "3/2"]).contains("0 <= I < N"));
}

#[test]
fn points_that_cannot_run_are_recorded_not_fatal() {
    let d = dir("errors");
    // 64 x 16 x 16 PEs exceed the U280's DSPs: that point records the error, the others run.
    let spec = write(
        &d,
        "spec.toml",
        &SPEC
            .replace("[4, 8, 16]", "[16, 64]")
            .replace("[4, 8]", "[4]")
            .replace("[1, 2]", "[1]"),
    );
    let out = d.join("r.jsonl").display().to_string();
    ok(&["sweep", &spec, "-o", &out, "-q"]);
    let r = records(&out);
    assert!(r[0]["summary"].is_object());
    assert!(
        r[1]["error"]
            .as_str()
            .unwrap()
            .contains("resources.fpga.dsp"),
        "{}",
        r[1]
    );
}

#[test]
fn report_renders_the_pareto_front() {
    let d = dir("report");
    let spec = write(&d, "spec.toml", SPEC);
    let out = d.join("r.jsonl").display().to_string();
    ok(&["sweep", &spec, "-o", &out, "-q"]);
    let rep = d.join("rep").display().to_string();
    ok(&["report", &out, "-o", &rep, "-q"]);
    let md = std::fs::read_to_string(d.join("rep/report.md")).unwrap();
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sweep-report.md");
    if std::env::var_os("TESSERA_BLESS").is_some() {
        std::fs::write(&golden, &md).unwrap();
    }
    assert_eq!(md, std::fs::read_to_string(&golden).unwrap());
    let csv = std::fs::read_to_string(d.join("rep/results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 13);
    let html = std::fs::read_to_string(d.join("rep/report.html")).unwrap();
    assert!(html.contains("<figure id=\"pareto\"><svg"));
    assert!(html.contains("Pareto front") && html.contains("Every point"));
    assert!(
        csv.starts_with("index,accel.matrix.rows,compression.weights.bits,scenario.batch,model")
    );
}

#[test]
fn constraints_exclude_points() {
    let d = dir("constraints");
    let text = SPEC.replace("[axes]", "[constraints]\nmax_dsps = 2048\n\n[axes]");
    let spec = write(&d, "spec.toml", &text);
    let out = d.join("r.jsonl").display().to_string();
    ok(&["sweep", &spec, "-o", &out, "-q"]);
    let r = records(&out);
    for rec in &r {
        let rows = rec["params"]["accel.matrix.rows"].as_u64().unwrap();
        // 16 x 16 x 16 PEs per row-count: rows x 256 DSPs.
        if rows * 256 > 2048 {
            assert!(
                rec["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("excluded: 4096 DSPs exceed constraints.max_dsps = 2048"),
                "{rec}"
            );
        } else {
            assert!(rec["summary"].is_object(), "{rec}");
        }
    }
}

#[test]
fn simulation_fidelity_runs_compiled_decode_steps() {
    let d = dir("simulation");
    let spec = write(
        &d,
        "sim.toml",
        &SPEC
            .replace("decode = 4\n", "decode = 4\nfidelity = \"simulation\"\n")
            .replace("[4, 8, 16]", "[4, 8]"),
    );
    let out = d.join("r.jsonl").display().to_string();
    ok(&["sweep", &spec, "-o", &out, "-q"]);
    let r = records(&out);
    assert_eq!(r.len(), 8);
    for rec in &r {
        assert_eq!(rec["summary"]["fidelity"], "simulation", "{rec}");
    }
    // With layer reuse the records say their figures extrapolate sampled layers.
    let reuse = write(
        &d,
        "reuse.toml",
        &SPEC
            .replace(
                "decode = 4\n",
                "decode = 4\nfidelity = \"simulation\"\nlayer_reuse = true\n",
            )
            .replace("tiny-llama", "gpt2")
            .replace("[4, 8, 16]", "[8]")
            .replace("[1, 2]", "[1]"),
    );
    let out = d.join("reuse.jsonl").display().to_string();
    ok(&["sweep", &reuse, "-o", &out, "-q"]);
    for rec in &records(&out) {
        assert_eq!(
            rec["summary"]["fidelity"], "simulation (layer reuse)",
            "{rec}"
        );
    }
    // An unknown fidelity names the key and the allowed values.
    let bad = write(
        &d,
        "bad.toml",
        &SPEC.replace("decode = 4\n", "decode = 4\nfidelity = \"rtl\"\n"),
    );
    let e = tessera(&[
        "sweep",
        &bad,
        "-o",
        &d.join("x.jsonl").display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success());
    assert!(
        stderr.contains("base.fidelity") && stderr.contains("simulation"),
        "{stderr}"
    );
}
