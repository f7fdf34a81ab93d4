//! End-to-end tests of `tessera schedule`'s modes: divide and conquer by blocks, minimum peak,
//! and clear errors (non-zero exit, no panic) for bad input.

mod common;

use common::{fails, ok_json};

const GPT2: [&str; 6] = ["schedule", "--model", "gpt2", "--seq", "128", "--json"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    GPT2.iter().chain(extra).copied().collect()
}

#[test]
fn divided_plans_report_parts_bound_and_gap() {
    let whole = ok_json(&with(&["--budget", "800000", "--divide", "none"]));
    let v = ok_json(&with(&["--budget", "800000", "--divide", "block"]));
    let i = &v["ilp"];
    assert_eq!(i["divided"], true);
    assert_eq!(whole["ilp"]["divided"], false);
    let parts = i["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 12, "one part per GPT-2 block");
    assert_eq!(parts[0]["name"], "layer0");
    let traffic = i["non_compulsory_bytes"].as_u64().unwrap();
    let bound = i["lower_bound_bytes"].as_u64().unwrap();
    let optimum = whole["ilp"]["non_compulsory_bytes"].as_u64().unwrap();
    if cfg!(any(feature = "cbc", feature = "highs")) {
        assert_eq!(whole["ilp"]["status"], "optimal");
        assert!(
            bound <= optimum && optimum <= traffic,
            "{bound} ≤ {optimum} ≤ {traffic}"
        );
    } else {
        // microlp alone may stop the whole graph at the time limit with an incumbent only.
        assert!(["optimal", "time_limit"].contains(&whole["ilp"]["status"].as_str().unwrap()));
        assert!(
            bound <= optimum && bound <= traffic,
            "{bound} ≤ {optimum}, {traffic}"
        );
    }
    let best = v["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["non_compulsory_bytes"].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(traffic <= best);
    let gap = i["gap"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&gap));
    assert!(["optimal", "feasible", "time_limit"].contains(&i["status"].as_str().unwrap()));
    let again = ok_json(&with(&["--budget", "800000", "--divide", "block"]));
    assert_eq!(
        again["ilp"]["non_compulsory_bytes"],
        i["non_compulsory_bytes"]
    );
    assert_eq!(again["ilp"]["parts"].as_array().unwrap().len(), parts.len());
}

#[test]
fn peak_mode_reports_a_validated_footprint() {
    let v = ok_json(&with(&["--budget", "100000000", "--mode", "peak"]));
    let i = &v["ilp"];
    assert_eq!(i["mode"], "peak");
    assert_eq!(i["non_compulsory_bytes"], 0);
    let peak = i["peak_bytes"].as_u64().unwrap();
    assert_eq!(i["plan_budget"].as_u64().unwrap(), peak);
    assert!(peak <= i["graph_order_peak_bytes"].as_u64().unwrap());
    assert!(peak >= v["min_budget"].as_u64().unwrap());
    assert!(i["lower_bound_bytes"].as_u64().unwrap() <= peak);
    let d = ok_json(&with(&[
        "--budget",
        "100000000",
        "--mode",
        "peak",
        "--divide",
        "block",
    ]));
    assert_eq!(d["ilp"]["parts"].as_array().unwrap().len(), 12);
}

#[test]
fn bad_input_fails_cleanly() {
    for limit in [
        "--time-limit=0",
        "--time-limit=-1",
        "--time-limit=1e9",
        "--time-limit=nan",
    ] {
        let e = fails(&with(&["--budget", "800000", limit]));
        assert!(e.contains("time limit"), "{limit}: {e}");
    }
    let e = fails(&with(&["--budget", "1000", "--divide", "block"]));
    assert!(e.contains("smallest feasible budget"), "{e}");
    let e = fails(&with(&["--budget", "1000", "--mode", "peak"]));
    assert!(e.contains("smallest feasible budget"), "{e}");
}

#[test]
fn joint_mode_solves_small_graphs_and_refuses_large_ones() {
    let v = ok_json(&[
        "schedule",
        "--model",
        "tiny-llama",
        "--seq",
        "16",
        "--budget",
        "13000",
        "--mode",
        "joint",
        "--json",
    ]);
    let i = &v["ilp"];
    assert_eq!(i["mode"], "joint");
    let best = v["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["non_compulsory_bytes"].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(i["non_compulsory_bytes"].as_u64().unwrap() <= best);
    let e = fails(&with(&["--budget", "800000", "--mode", "joint"]));
    assert!(e.contains("whole graphs only"), "{e}");
}
