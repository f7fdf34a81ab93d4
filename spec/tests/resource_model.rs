//! The resource model: its fit reproduces the calibration it was fitted to, it covers only
//! engines the generator builds, and budgets and sweeps use it.

use tessera_spec::accel::Accelerator;
use tessera_spec::resource_model::{buildable, engine_dsps, Calibration, Datapath};

fn variant(rows: u64, cols: u64, chain: u64, precisions: &str, nm: &str) -> Accelerator {
    let text = Accelerator::preset_text("tiny").unwrap();
    let start = text.find("precisions = [").unwrap();
    let end = start + text[start..].find("]\n").unwrap() + 2;
    let text = format!(
        "{}precisions = [{precisions}]\n{}",
        &text[..start],
        &text[end..]
    )
    .replace("rows = 2", &format!("rows = {rows}"))
    .replace("cols = 2", &format!("cols = {cols}"))
    .replace("chain = 4", &format!("chain = {chain}"))
    .replace("nm = [2, 4, 8, 16]", &format!("nm = {nm}"))
    .replace("dsp = 64", "dsp = 100000");
    Accelerator::from_toml_str(&text, "variant.toml").unwrap()
}

const MUL: &str = r#"{ weight = "int8", activation = "int8", macs_per_dsp = 1.0 }"#;
const SA: &str = r#"{ weight = "int4", activation = "int8", macs_per_dsp = 1.0, shift_add = true }, { weight = "int2", activation = "int8", macs_per_dsp = 1.0, shift_add = true }"#;

#[test]
fn the_fit_reproduces_the_calibration_points() {
    let cal = Calibration::builtin();
    assert_eq!(cal.points.len(), 36, "the shipped grid");
    assert!(cal.yosys.starts_with("Yosys "));
    for p in &cal.points {
        let precisions = match p.datapath {
            Datapath::Multiplier => MUL.to_string(),
            Datapath::ShiftAdd => SA.to_string(),
            Datapath::Mixed => format!("{MUL}, {SA}"),
        };
        // Chains of 2 have one segment either way; the estimate depends only on the segments.
        let nm = if p.segments > 1 {
            "[2, 4, 8, 16]"
        } else {
            "[16]"
        };
        let a = variant(p.rows, p.cols, p.chain, &precisions, nm);
        let e = cal
            .estimate(a.matrix())
            .expect("a calibrated engine has an estimate");
        let close = |est: f64, got: f64, what: &str| {
            let tol = (0.06 * got).max(1.0);
            assert!(
                (est - got).abs() <= tol,
                "{what}: estimate {est} vs measured {got} at {p:?}"
            );
        };
        close(e.dsp as f64, p.dsp as f64, "dsp");
        close(e.lut as f64, p.lut as f64, "lut");
        close(e.ff as f64, p.ff as f64, "ff");
        assert!(e.source.contains(&cal.yosys));
    }
}

#[test]
fn engines_the_generator_cannot_build_have_no_estimate() {
    let u280 = Accelerator::preset("u280").unwrap();
    assert!(buildable(u280.matrix()).is_none());
    assert!(Calibration::builtin().estimate(u280.matrix()).is_none());
    assert_eq!(engine_dsps(u280.matrix()), u280.matrix().dsps());
    let tiny = Accelerator::preset("tiny").unwrap();
    assert_eq!(buildable(tiny.matrix()), Some((Datapath::Mixed, 2)));
}

#[test]
fn bigger_engines_cost_more_and_budgets_use_the_measurement() {
    let cal = Calibration::builtin();
    let small = cal
        .estimate(variant(2, 2, 4, MUL, "[2, 4, 8, 16]").matrix())
        .unwrap();
    let big = cal
        .estimate(variant(8, 8, 8, MUL, "[2, 4, 8, 16]").matrix())
        .unwrap();
    assert!(big.dsp > small.dsp && big.lut > small.lut && big.ff > small.ff);
    // A tiny board budget below the measured DSPs is refused with the measured figure.
    let text = Accelerator::preset_text("tiny")
        .unwrap()
        .replace("dsp = 64", "dsp = 20");
    let err = Accelerator::from_toml_str(&text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("as measured for the generated engine"),
        "{err}"
    );
}
