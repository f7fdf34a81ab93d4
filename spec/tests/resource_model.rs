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
    assert_eq!(
        cal.points.len(),
        90,
        "the shipped grid: 54 plain, 36 packing"
    );
    assert_eq!(cal.points.iter().filter(|p| p.pack).count(), 36);
    assert!(cal.yosys.starts_with("Yosys "));
    for p in &cal.points {
        let precisions = match p.datapath {
            Datapath::Multiplier => MUL.to_string(),
            Datapath::ShiftAdd => SA.to_string(),
            Datapath::Mixed => format!("{MUL}, {SA}"),
        };
        let precisions = if p.pack {
            precisions.replace("macs_per_dsp = 1.0", "macs_per_dsp = 2.0")
        } else {
            precisions
        };
        // The estimate depends only on the segments: N = chain / segments gives them (a packing
        // engine has at least 2 whatever N).
        let nm = format!("[{}, 16]", p.chain / p.segments);
        let a = variant(p.rows, p.cols, p.chain, &precisions, &nm);
        let e = cal
            .estimate(a.matrix())
            .expect("a calibrated engine has an estimate");
        let close = |est: f64, got: f64, what: &str| {
            // The five-term fit is within 8% of every point (LUTs worst, on 1 × 2 packing
            // engines).
            let tol = (0.08 * got).max(1.0);
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
    assert_eq!(buildable(tiny.matrix()), Some((Datapath::Mixed, false, 2)));
}

#[test]
fn packing_engines_are_estimated_from_packing_points() {
    let text = include_str!("../../examples/accelerators/u280-int8.toml");
    let u280 = Accelerator::from_toml_str(text, "u280-int8.toml").unwrap();
    // int8 to int2 on the DSP multipliers, N:8 sparsity: 2 segments.
    assert_eq!(
        buildable(u280.matrix()),
        Some((Datapath::Multiplier, true, 2))
    );
    let e = Calibration::builtin().estimate(u280.matrix()).unwrap();
    assert!(
        e.source.contains("multiplier packing engines"),
        "{}",
        e.source
    );
    // One DSP per lane at least: packing does not halve the multipliers.
    assert!(e.dsp >= u280.matrix().dsps(), "{e:?}");
    // Packing adds no DSP to an engine of the same shape.
    let mul = MUL.replace("macs_per_dsp = 1.0", "macs_per_dsp = 2.0");
    let cal = Calibration::builtin();
    let packed = cal
        .estimate(variant(2, 2, 4, &mul, "[16]").matrix())
        .unwrap();
    let plain = cal
        .estimate(variant(2, 2, 4, MUL, "[2, 4, 8, 16]").matrix())
        .unwrap();
    assert_eq!(packed.dsp, plain.dsp, "{packed:?} vs {plain:?}");
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
