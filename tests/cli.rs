//! End-to-end tests of the `tessera` binary: the README's main job, JSON field names, and clear
//! errors (non-zero exit, no panic) for bad input.

use serde_json::Value;
use std::path::PathBuf;
use tessera_spec::isa::data::f16_bytes;
mod common;

use common::{fails, ok_json, tessera};

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn f(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

#[test]
fn default_run_json_has_stable_fields_and_physical_values() {
    let v = ok_json(&["run", "--json", "--decode", "64"]);
    assert_eq!(v["model"], "llama2-7b");
    assert_eq!(v["accelerator"], "u280");
    for p in [
        "prefill.latency_s",
        "prefill.cycles",
        "prefill.energy_j",
        "prefill.dram_bytes",
        "decode.tokens_per_s",
        "decode.latency_per_token_s",
        "decode.energy_per_token_j",
        "decode.tokens_per_j",
        "decode.dram_bytes_per_token",
    ] {
        assert!(f(&v, p) > 0.0, "{p}");
    }
    // Decode can never beat the weight memory's bandwidth divided by the bytes each token moves.
    assert!(f(&v, "streaming_bandwidth_gbps") <= f(&v, "peak_bandwidth_gbps"));
    let bound = f(&v, "streaming_bandwidth_gbps") * 1e9 / f(&v, "decode.dram_bytes_per_token");
    assert!(f(&v, "decode.tokens_per_s") <= bound * (1.0 + 1e-9));
    // Every token reads at least the weights once.
    assert!(f(&v, "decode.dram_bytes_per_token") >= f(&v, "weight_bytes") * 0.99);
    let tpj = f(&v, "decode.tokens_per_j") * f(&v, "decode.energy_per_token_j");
    assert!((tpj - 1.0).abs() < 1e-9);
    let gpus = v["gpu_baselines"].as_array().unwrap();
    assert_eq!(gpus.len(), 3);
    for g in gpus {
        assert!(g["name"].is_string());
        assert!(g["prefill_latency_s"].as_f64().unwrap() > 0.0);
        assert!(g["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(g["energy_per_token_j"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn decode_reports_the_activations_kept_on_chip() {
    // One decode step of tiny-llama at context 16: every operator's activations fit on chip, so
    // the bytes kept there are the graph's activation bytes.
    let run = ok_json(&[
        "run",
        "--model",
        "tiny-llama",
        "--prefill",
        "16",
        "--decode",
        "1",
        "--json",
    ]);
    let graph = ok_json(&[
        "graph",
        "--model",
        "tiny-llama",
        "--phase",
        "decode",
        "--context",
        "16",
        "--json",
    ]);
    let acts: f64 = graph["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| f(o, "act_in_bytes") + f(o, "act_out_bytes"))
        .sum();
    let kept = &run["decode"]["activations_on_chip"];
    assert!(acts > 0.0);
    assert_eq!(f(kept, "bytes_per_token"), acts);
    let traffic = f(&run, "decode.dram_bytes_per_token");
    assert!((f(kept, "traffic_share") - acts / (acts + traffic)).abs() < 1e-12);
    // At the u280's HBM streaming bandwidth.
    let seconds = f(kept, "off_chip_seconds_per_token");
    assert!((seconds - acts / f(&run, "streaming_bandwidth_gbps") / 1e9).abs() < 1e-15);
}

#[test]
fn default_run_prints_a_table() {
    let out = tessera(&["run", "--decode", "8"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "prefill latency",
        "decode tokens/s",
        "decode tokens/J",
        "h100-sxm5",
        "bound",
    ] {
        assert!(s.contains(needle), "missing {needle}:\n{s}");
    }
}

#[test]
fn run_is_deterministic() {
    let a = tessera(&[
        "run",
        "--json",
        "--model",
        "mixtral-8x7b",
        "--accel",
        "vhk158",
        "--decode",
        "16",
    ]);
    let b = tessera(&[
        "run",
        "--json",
        "--model",
        "mixtral-8x7b",
        "--accel",
        "vhk158",
        "--decode",
        "16",
    ]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn every_preset_pair_runs_or_says_why() {
    for model in ["gpt2", "bert-base", "vit-b16", "tiny-llama", "opt-6.7b"] {
        for accel in ["u280", "vhk158", "edge-asic"] {
            let v = ok_json(&[
                "run",
                "--json",
                "--model",
                model,
                "--accel",
                accel,
                "--decode",
                "4",
                "--prefill",
                "64",
            ]);
            assert!(f(&v, "prefill.latency_s") > 0.0, "{model} on {accel}");
        }
    }
    // Encoders have no decode phase.
    let v = ok_json(&[
        "run",
        "--json",
        "--model",
        "bert-base",
        "--decode",
        "4",
        "--prefill",
        "128",
    ]);
    assert!(v["decode"].is_null());
}

#[test]
fn graph_json_accounting() {
    let v = ok_json(&[
        "graph",
        "--model",
        "gpt2",
        "--compression",
        "fp16",
        "--json",
        "--seq",
        "16",
    ]);
    assert_eq!(v["params"], 124_439_808);
    assert_eq!(v["weight_bytes"], 2 * 124_439_808u64);
    assert!(f(&v, "flops_per_token") > 0.0);
    let ops = v["ops"].as_array().unwrap();
    assert_eq!(ops.len() as u64, v["op_count"].as_u64().unwrap());
    assert!(ops.iter().any(|o| o["op"] == "softmax"));
    let dot = tessera(&["graph", "--model", "tiny-llama", "--dot"]);
    assert!(String::from_utf8_lossy(&dot.stdout).starts_with("digraph"));
}

#[test]
fn check_accepts_the_examples() {
    let mut args = vec!["check".to_string()];
    for dir in [
        "examples/accelerators",
        "examples/compression",
        "examples/models",
    ] {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .collect();
        files.sort();
        args.extend(files);
    }
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = tessera(&refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_shows_the_generated_engines_estimated_resources() {
    // The calibrated estimate against the board: tiny's engine fits, and so does u280-int8's
    // (the check itself compares DSPs only).
    let line = |path: &str| {
        let out = tessera(&["check", path]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tiny = line("examples/accelerators/tiny.toml");
    assert!(
        tiny.contains("DSP 56 of 64") && !tiny.contains("over"),
        "{tiny}"
    );
    let u280 = line("examples/accelerators/u280-int8.toml");
    assert!(u280.contains("LUT 958195 of 1303680 (73%)"), "{u280}");
    assert!(u280.contains("BRAM36 1184 of 2016 (59%)"), "{u280}");
    assert!(
        u280.contains("of 9024 (74%)") && !u280.contains("over"),
        "{u280}"
    );
    // No estimate for engines the generator does not build.
    assert!(!line("examples/accelerators/u280.toml").contains("estimated"));
}

#[test]
fn unknown_presets_list_the_valid_names() {
    assert!(fails(&["run", "--model", "llama9"]).contains("llama2-7b"));
    assert!(fails(&["run", "--accel", "u999"]).contains("u280"));
    assert!(fails(&["run", "--compression", "w1"]).contains("w4a8-g128"));
    assert!(fails(&["run", "--gpu", "b200"]).contains("h100-sxm5"));
}

#[test]
fn missing_file_is_named() {
    assert!(fails(&["run", "--accel", "nope/missing.toml"]).contains("nope/missing.toml"));
}

#[test]
fn malformed_and_unknown_keys_name_file_and_key() {
    let p = temp_file("broken.toml", "name = \"x\"\n[matrix\nrows = 3\n");
    let e = fails(&["check", "--kind", "accelerator", p.to_str().unwrap()]);
    assert!(e.contains("broken.toml"), "{e}");
    let text = std::fs::read_to_string("examples/accelerators/tiny.toml")
        .unwrap()
        .replacen("[matrix]", "[matrix]\nrowz = 4", 1);
    let p = temp_file("unknown.toml", &text);
    let e = fails(&["check", p.to_str().unwrap()]);
    assert!(e.contains("rowz"), "{e}");
    let e = fails(&["run", "--accel", p.to_str().unwrap()]);
    assert!(e.contains("rowz"), "{e}");
}

#[test]
fn inconsistent_inputs_are_explained() {
    // N > M in N:M.
    let p = temp_file(
        "nm.toml",
        "name = \"bad\"\nactivations = \"int8\"\n[weights]\nbits = 4\ngroup_size = 128\nsymmetric = true\nsparsity = { kind = \"nm\", n = 8, m = 4 }\n[kv]\nformat = \"fp16\"\n",
    );
    let e = fails(&["check", p.to_str().unwrap()]);
    assert!(e.contains("weights.sparsity"), "{e}");
    // A group size that does not divide GPT-2's width of 768.
    let p = temp_file(
        "g512.toml",
        "name = \"g512\"\nactivations = \"int8\"\n[weights]\nbits = 4\ngroup_size = 512\nsymmetric = true\n[kv]\nformat = \"fp16\"\n",
    );
    let e = fails(&[
        "run",
        "--model",
        "gpt2",
        "--compression",
        p.to_str().unwrap(),
    ]);
    assert!(e.contains("weights.attention.group_size"), "{e}");
    assert!(e.contains("768"), "{e}");
    // Weights that fit no memory of the accelerator.
    let e = fails(&[
        "run",
        "--model",
        "llama2-70b",
        "--compression",
        "fp16",
        "--accel",
        "u280",
    ]);
    assert!(e.contains("capacity_gib"), "{e}");
    assert!(
        e.starts_with("error: examples/accelerators/u280.toml:"),
        "{e}"
    );
    // A precision the matrix engine lacks.
    let e = fails(&[
        "run",
        "--model",
        "tiny-llama",
        "--compression",
        "fp16",
        "--accel",
        "tiny",
    ]);
    assert!(e.contains("matrix.precisions"), "{e}");
    // An unsupported architecture.
    let p = temp_file("t5.json", r#"{"model_type": "t5", "d_model": 512}"#);
    let e = fails(&["run", "--model", p.to_str().unwrap()]);
    assert!(e.contains("model_type"), "{e}");
    // Prefill + decode beyond a learned position table.
    let e = fails(&[
        "run",
        "--model",
        "gpt2",
        "--prefill",
        "1000",
        "--decode",
        "100",
    ]);
    assert!(e.contains("1024"), "{e}");
}

#[test]
fn asm_and_disasm_round_trip() {
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gemm.bin");
    let out = tessera(&[
        "asm",
        "examples/programs/double-buffered-gemm.tasm",
        "-o",
        bin.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("8 instructions, 344 bytes"));
    let text = tessera(&["disasm", bin.to_str().unwrap()]);
    assert!(text.status.success());
    let again = temp_file("again.tasm", &String::from_utf8_lossy(&text.stdout));
    let bin2 = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gemm2.bin");
    assert!(
        tessera(&["asm", again.to_str().unwrap(), "-o", bin2.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&bin2).unwrap());
}

#[test]
fn bad_programs_are_explained() {
    let src = temp_file("bad.tasm", "sys op=halt\nmatmul m=70000\n");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad.bin");
    let e = fails(&["asm", src.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(
        e.contains("bad.tasm") && e.contains("line 2") && e.contains("max 65535"),
        "{e}"
    );
    let junk = temp_file("junk.bin", "not a program");
    let e = fails(&["disasm", junk.to_str().unwrap()]);
    assert!(e.contains("not a Tessera program"), "{e}");
}

#[test]
fn sim_runs_text_and_binary_programs() {
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sim-gemm.bin");
    let src = "examples/programs/double-buffered-gemm.tasm";
    assert!(tessera(&["asm", src, "-o", bin.to_str().unwrap()])
        .status
        .success());
    let from_text = ok_json(&["sim", src, "--accel", "tiny", "--json"]);
    let from_bin = ok_json(&["sim", bin.to_str().unwrap(), "--accel", "tiny", "--json"]);
    assert_eq!(from_text, from_bin);
    assert!(from_text["cycles"].as_u64().unwrap() > 0);
    assert_eq!(from_text["instructions"], 8);
    // One completion per instruction, and the fetch wake-ups.
    assert!(from_text["events"].as_u64().unwrap() >= 8);
    assert!(from_text["units"]["mm"]["busy_cycles"].as_u64().unwrap() > 0);
    let trace = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("trace.json");
    let out = tessera(&[
        "sim",
        src,
        "--accel",
        "tiny",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("token stall"));
    let t: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert!(t["traceEvents"].as_array().unwrap().len() >= 8);
}

#[test]
fn sim_explains_bad_programs() {
    let p = temp_file("deadlock.tasm", "matmul wait=ld release=ld weight=int8 act_int8=1 m=1 n=1 k=1\nload wait=mm release=mm bytes=64\n");
    let e = fails(&["sim", p.to_str().unwrap(), "--accel", "tiny"]);
    assert!(e.contains("deadlock") && e.contains("lacks ld → mm"), "{e}");
    let p = temp_file("badbuf.tasm", "load buffer=7 bytes=64\n");
    let e = fails(&["sim", p.to_str().unwrap(), "--accel", "tiny"]);
    assert!(
        e.contains("instruction 0 (load)") && e.contains("buffer 7"),
        "{e}"
    );
}

#[test]
fn sim_functional_loads_computes_and_dumps() {
    // fp16 [3, -254, 1, 5] quantised per row: scale max|x|/127 = 2 (fp16 0x4000), values
    // 3/2 → 2 (ties to even), -127, 1/2 → 0, 5/2 → 2.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let x = dir.join("x.bin");
    std::fs::write(&x, f16_bytes(&[3.0, -254.0, 1.0, 5.0])).unwrap();
    let program = temp_file(
        "quantize.tasm",
        "load buffer=1 channel=0 bytes=8 release=sfu
         sfu wait=ld op=quantize src_buffer=1 dst_buffer=1 dst_addr=64 rows=1 cols=4 release=st
         store wait=sfu buffer=1 buf_addr=64 channel=1 dram_addr_lo=0x100 bytes=6",
    );
    let y = dir.join("y.bin");
    let (p, x, y) = (
        program.to_str().unwrap(),
        x.to_str().unwrap(),
        y.to_str().unwrap(),
    );
    let load = format!("0:0={x}");
    let dump = format!("1:0x100:6={y}");
    let r = ok_json(&[
        "sim",
        p,
        "--functional",
        "--load",
        &load,
        "--dump",
        &dump,
        "--json",
    ]);
    assert_eq!(r["functional"], true);
    assert_eq!(std::fs::read(y).unwrap(), vec![2, 0x81, 0, 2, 0x00, 0x40]);
    // Timing is the same without data.
    let timing = ok_json(&["sim", p, "--json"]);
    assert_eq!(timing["cycles"], r["cycles"]);
    let e = fails(&["sim", p, "--functional", "--dump", &format!("99:0:4={y}")]);
    assert!(
        e.contains("--dump 99:0:4") && e.contains("channels 0 to"),
        "{e}"
    );
    let e = fails(&["sim", p, "--functional", "--load", "0:zero=x.bin"]);
    assert!(
        e.contains("address `zero`") && e.contains("CHANNEL:ADDR=FILE"),
        "{e}"
    );
    let e = fails(&[
        "sim",
        p,
        "--functional",
        "--load",
        &format!("0:0={y}.missing"),
    ]);
    assert!(e.contains("cannot read"), "{e}");
    // Data flags need functional mode.
    let out = tessera(&["sim", p, "--load", &load]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--functional"));
}

#[test]
fn run_prices_give_cost_efficiency() {
    let priced = [
        "run",
        "--model",
        "tiny-llama",
        "--accel",
        "tiny",
        "--gpu",
        "a100-80gb-sxm4",
        "--price",
        "tiny=2000",
        "--price",
        "a100-80gb-sxm4=20000",
    ];
    let v = ok_json(&[&priced[..], &["--json"]].concat());
    assert_eq!(v["price_usd"], 2000.0);
    assert_eq!(v["gpu_baselines"][0]["price_usd"], 20000.0);
    let text = String::from_utf8(tessera(&priced).stdout).unwrap();
    let tokens = f(&v, "decode.tokens_per_s");
    assert!(text.contains("tok/s per $1k"), "{text}");
    assert!(
        text.contains(&format!("{:.3}", tokens / 2000.0 * 1000.0)),
        "{text}"
    );
    // Without prices there is no price field and no cost column.
    let plain = ok_json(&["run", "--model", "tiny-llama", "--accel", "tiny", "--json"]);
    assert!(plain.get("price_usd").is_none());
    let e = fails(&["run", "--price", "a100=1"]);
    assert!(
        e.contains("--price a100=1") && e.contains("a100-80gb-sxm4"),
        "{e}"
    );
    let e = fails(&["run", "--price", "u280=free"]);
    assert!(e.contains("positive number of US dollars"), "{e}");
}

#[test]
fn schedule_plots_the_memory_map() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("memory-map.svg");
    let _ = ok_json(&[
        "schedule",
        "--model",
        "gpt2",
        "--seq",
        "128",
        "--budget",
        "800000",
        "--json",
        "--plot",
        path.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    // A budget just above M_R spills: both stay kinds and the budget line are in the legend.
    for label in ["produced", "loaded from DRAM", "budget", "schedule step"] {
        assert!(svg.contains(label), "{label}");
    }
    assert!(svg.matches("<rect").count() > 100, "one rectangle per stay");
}

#[test]
fn schedule_reports_validated_baselines() {
    let v = ok_json(&[
        "schedule", "--model", "gpt2", "--seq", "128", "--budget", "800000", "--json",
    ]);
    let b = v["baselines"].as_array().unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0]["name"], "topo-lru-first-fit");
    assert_eq!(b[1]["name"], "topo-belady-first-fit");
    for x in b {
        assert!(
            x["non_compulsory_bytes"].as_u64().unwrap() > 0,
            "a budget just above M_R forces spills"
        );
        assert!(x["peak_bytes"].as_u64().unwrap() <= 800_000);
    }
    let min = v["min_budget"].as_u64().unwrap().to_string();
    let e = fails(&[
        "schedule", "--model", "gpt2", "--seq", "128", "--budget", "1000",
    ]);
    assert!(
        e.contains(&format!("smallest feasible budget is {min}")),
        "{e}"
    );
    let e = fails(&["schedule", "--model", "gpt2"]);
    assert!(e.contains("--budget"), "{e}");
    let v = ok_json(&[
        "schedule",
        "--model",
        "tiny-llama",
        "--accel",
        "u280",
        "--json",
    ]);
    assert_eq!(v["budget"], 35_651_584);
}

#[test]
fn compile_writes_bucketed_programs_that_simulate() {
    let dir = std::env::temp_dir().join(format!("tessera-compile-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    let out = tessera(&[
        "compile",
        "--model",
        "tiny-llama",
        "--max-context",
        "40",
        "--max-prefill",
        "20",
        "--prefill-bucket",
        "8",
        "-o",
        d,
        "-q",
        "--exact",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("programs.json")).unwrap()).unwrap();
    let programs = |phase: &str| -> Vec<&Value> {
        manifest
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["phase"] == phase)
            .collect()
    };
    let lengths = |phase: &str| -> Vec<u64> {
        programs(phase)
            .iter()
            .map(|p| p["tokens"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(lengths("decode"), [16, 32, 48]);
    assert_eq!(lengths("prefill"), [8, 16, 24]);
    assert!(dir.join("prefill-seq24.bin").exists());
    // 40 exact-length decode programs against 3 bucketed ones, 20 prefills against 3.
    let storage: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("storage.json")).unwrap()).unwrap();
    for (phase, bucketed, exact) in [("decode", 3, 40), ("prefill", 3, 20)] {
        assert_eq!(storage[phase]["bucketed"]["programs"], bucketed);
        assert_eq!(storage[phase]["exact"]["programs"], exact);
        let bucketed_bytes: u64 = programs(phase)
            .iter()
            .map(|p| p["instruction_bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(
            storage[phase]["bucketed"]["bytes"].as_u64().unwrap(),
            bucketed_bytes
        );
    }
    assert!(f(&storage, "decode.exact_over_bucketed") > 10.0);
    assert!(f(&storage, "prefill.exact_over_bucketed") > 3.0);
    let r = ok_json(&[
        "sim",
        dir.join("prefill-seq24.bin").to_str().unwrap(),
        "--json",
    ]);
    assert!(r["units"]["mm"]["instructions"].as_u64().unwrap() > 0);
    let bin = dir.join("decode-ctx48.bin");
    let r = ok_json(&["sim", bin.to_str().unwrap(), "--json"]);
    assert!(r["dram_bytes"].as_u64().unwrap() > 0);
    assert!(dir.join("decode-ctx48.tasm").exists());
    let e = fails(&["compile", "--model", "tiny-llama", "--bucket", "0", "-o", d]);
    assert!(e.contains("--bucket"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_simulates_decode_with_bucket_reuse() {
    let base = [
        "run",
        "--model",
        "tiny-llama",
        "--prefill",
        "20",
        "--decode",
        "30",
        "--json",
    ];
    let roof = ok_json(&base);
    let sim = ok_json(&[&base[..], &["--fidelity", "sim"]].concat());
    assert_eq!(sim["fidelity"], "simulation");
    assert_eq!(sim["prefill"]["fidelity"], "simulation");
    assert_eq!(sim["decode"]["fidelity"], "simulation");
    // The 20-token prompt compiles as its 128-token bucket (or, with `--prefill-bucket 1`, as
    // itself, which is faster), and never beats the roofline of the 20 tokens.
    assert_eq!(sim["prefill"]["simulation"]["compiled_tokens"], 128);
    assert!(f(&sim, "prefill.latency_s") >= f(&roof, "prefill.latency_s"));
    assert!(f(&sim, "prefill.dram_bytes") >= f(&roof, "prefill.dram_bytes"));
    let exact = ok_json(&[&base[..], &["--fidelity", "sim", "--prefill-bucket", "1"]].concat());
    assert_eq!(exact["prefill"]["simulation"]["compiled_tokens"], 20);
    assert!(f(&exact, "prefill.latency_s") < f(&sim, "prefill.latency_s"));
    assert!(f(&exact, "prefill.latency_s") >= f(&roof, "prefill.latency_s"));
    let e = fails(&[&base[..], &["--fidelity", "sim", "--prefill-bucket", "0"]].concat());
    assert!(e.contains("--prefill-bucket must be at least 1"), "{e}");
    // Contexts 20..=49 fall in the buckets of 32, 48 and 64.
    assert_eq!(sim["decode"]["simulation"]["programs"], 3);
    assert_eq!(sim["decode"]["simulation"]["mode"], "bucket-reuse");
    // The simulator never beats the roofline, and moves at least the same bytes.
    assert!(f(&sim, "decode.tokens_per_s") <= f(&roof, "decode.tokens_per_s"));
    assert!(f(&sim, "decode.dram_bytes_per_token") >= f(&roof, "decode.dram_bytes_per_token"));
    let every = ok_json(&[&base[..], &["--fidelity", "sim", "--bucket", "1"]].concat());
    assert_eq!(every["decode"]["simulation"]["programs"], 30);
    assert_eq!(every["decode"]["simulation"]["mode"], "every-step");
    // The per-class attribution uses the analytical model at the simulated programs' contexts:
    // every step's own with `--bucket 1`, the rounded-up buckets' otherwise.
    assert_eq!(every["decode"]["by_class"], roof["decode"]["by_class"]);
    let kv = |v: &Value| f(v, "decode.by_class.kv_read.dram_bytes");
    assert!(kv(&sim) > kv(&roof), "{} vs {}", kv(&sim), kv(&roof));
    assert_eq!(
        sim["decode"]["by_class"]["linear"],
        roof["decode"]["by_class"]["linear"]
    );
    let e = fails(&[&base[..], &["--fidelity", "sim", "--bucket", "0"]].concat());
    assert!(e.contains("--bucket must be at least 1"), "{e}");
    // The last step's bandwidth over time: 100 slices whose bytes add up to the step's.
    let t = &sim["decode"]["simulation"]["last_step_bandwidth"];
    assert_eq!(t["context"], 64);
    let gbps: Vec<f64> = t["gbps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(gbps.len(), 100);
    assert!(gbps.iter().all(|&g| g >= 0.0) && gbps.iter().any(|&g| g > 0.0));
    // Per-unit cycles and per-channel traffic over the 30 steps.
    let units = sim["decode"]["simulation"]["units"].as_object().unwrap();
    assert!(units["mv"]["busy_cycles"].as_u64().unwrap() > 0);
    let channels = sim["decode"]["simulation"]["channels"].as_array().unwrap();
    let bytes: u64 = channels.iter().map(|c| c["bytes"].as_u64().unwrap()).sum();
    let per_token = f(&sim, "decode.dram_bytes_per_token");
    assert!(
        (bytes as f64 - per_token * 30.0).abs() < 1.0,
        "{bytes} vs {per_token} × 30"
    );
}

#[test]
fn layer_reuse_extrapolates_what_every_layer_gives() {
    // LLaMA2-7B's 32 layers: simulated with 1 and 3 layers and extended, against all 32.
    let base = [
        "run",
        "--model",
        "llama2-7b",
        "--prefill",
        "40",
        "--decode",
        "8",
        "--fidelity",
        "sim",
        "--json",
    ];
    let every = ok_json(&base);
    let reuse = ok_json(&[&base[..], &["--layer-reuse"]].concat());
    for phase in ["prefill", "decode"] {
        assert_eq!(every[phase]["simulation"]["layers"], "every-layer");
        assert_eq!(reuse[phase]["simulation"]["layers"], "layer-reuse");
        // Counts that every layer repeats exactly come out exact.
        for key in ["instructions", "instruction_bytes"] {
            assert_eq!(
                every[phase]["simulation"][key], reuse[phase]["simulation"][key],
                "{phase} {key}"
            );
        }
    }
    assert_eq!(
        f(&every, "prefill.dram_bytes"),
        f(&reuse, "prefill.dram_bytes")
    );
    assert_eq!(
        f(&every, "decode.dram_bytes_per_token"),
        f(&reuse, "decode.dram_bytes_per_token")
    );
    // Times and energies within 0.2% (measured: prefill 0.003%, decode 0.001%).
    for key in [
        "prefill.cycles",
        "prefill.energy_j",
        "decode.cycles",
        "decode.tokens_per_j",
    ] {
        let (a, b) = (f(&every, key), f(&reuse, key));
        assert!((b / a - 1.0).abs() < 2e-3, "{key}: {b} vs {a}");
    }
    // No run executed the whole decode step, so there is no bandwidth timeline to show.
    let t = &reuse["decode"]["simulation"]["last_step_bandwidth"]["gbps"];
    assert_eq!(t.as_array().map(Vec::len), Some(0));
    // GPT-2's decode layers take 17 µs each: a sample spanning 32 of the DDR's 7.8 µs refresh
    // intervals would need more than its 12 layers, so the step is simulated whole; its prefill
    // layers are long enough to sample.
    let gpt2 = ok_json(&[
        "run",
        "--model",
        "gpt2",
        "--prefill",
        "40",
        "--decode",
        "8",
        "--fidelity",
        "sim",
        "--layer-reuse",
        "--json",
    ]);
    assert_eq!(gpt2["decode"]["simulation"]["layers"], "every-layer");
    assert_eq!(gpt2["prefill"]["simulation"]["layers"], "layer-reuse");
    // Two layers are simulated whole.
    let tiny = ok_json(&[
        "run",
        "--model",
        "tiny-llama",
        "--decode",
        "2",
        "--fidelity",
        "sim",
        "--layer-reuse",
        "--json",
    ]);
    assert_eq!(tiny["decode"]["simulation"]["layers"], "every-layer");
    // A KV cache that only the sampled layers would fit is refused as the whole model's is.
    let e = fails(&[
        "run",
        "--batch",
        "16",
        "--prefill",
        "2048",
        "--decode",
        "16",
        "--fidelity",
        "sim",
        "--layer-reuse",
    ]);
    assert!(e.contains("memories[0].capacity_gib"), "{e}");
}

#[test]
fn run_trace_writes_the_last_decode_step() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("run-trace.json");
    let out = tessera(&[
        "run",
        "--model",
        "tiny-llama",
        "--prefill",
        "20",
        "--decode",
        "8",
        "-q",
        "--trace",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("matmul") || n.starts_with("matvec"))));
}

#[test]
fn run_report_writes_a_self_contained_page() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("run-report");
    let _ = std::fs::remove_dir_all(&dir);
    let args = [
        "run",
        "--model",
        "tiny-llama",
        "--prefill",
        "20",
        "--decode",
        "8",
        "--fidelity",
        "sim",
        "-q",
        "--report",
        dir.to_str().unwrap(),
    ];
    let out = tessera(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for id in ["roofline", "prefill-classes", "decode-classes", "bandwidth"] {
        assert!(page.contains(&format!("<figure id=\"{id}\"><svg")), "{id}");
    }
    for gpu in ["v100s-pcie", "a100-80gb-sxm4", "h100-sxm5"] {
        assert!(page.contains(gpu), "{gpu}");
    }
    assert!(page.contains("Decode by unit (simulation)"));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["decode"]["fidelity"], "simulation");
    // Same inputs, same page.
    let again = dir.join("again");
    let mut args2 = args.to_vec();
    let last = args2.len() - 1;
    let again_s = again.to_str().unwrap().to_string();
    args2[last] = &again_s;
    assert!(tessera(&args2).status.success());
    assert_eq!(
        page,
        std::fs::read_to_string(again.join("report.html")).unwrap()
    );
}
