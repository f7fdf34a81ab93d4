//! One run's report page: the accelerator beside the GPUs, the roofline, time and energy by
//! operator class and by part, and (from a simulation) off-chip bandwidth over a decode step.

use crate::html::{sig, Page};
use crate::plots::{self, PlotError, Roof, RooflinePoint};

/// One operator class's share of a phase.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassView {
    /// Class name.
    pub class: String,
    /// Seconds.
    pub seconds: f64,
    /// Joules.
    pub energy_j: f64,
    /// Off-chip bytes.
    pub dram_bytes: u64,
    /// Multiply-accumulates.
    pub macs: u64,
}

/// One phase (prefill or decode).
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseView {
    /// `prefill` or `decode`.
    pub name: String,
    /// Which model produced the figures.
    pub fidelity: String,
    /// Operator classes.
    pub classes: Vec<ClassView>,
    /// Energy by part (`mac`, `dram`, ...), joules.
    pub energy_parts: Vec<(String, f64)>,
}

/// One machine's row of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineRow {
    /// Machine.
    pub name: String,
    /// Prefill seconds.
    pub prefill_s: f64,
    /// Decode tokens per second.
    pub decode_tokens_per_s: f64,
    /// Joules per decode token.
    pub energy_per_token_j: f64,
    /// Whether the model fits its memory.
    pub fits: bool,
    /// Decode tokens per second per $1,000 of the machine's price, when one was given.
    pub tokens_per_s_per_kusd: Option<f64>,
}

/// One unit's cycles over the simulated decode steps.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitRow {
    /// Unit name.
    pub unit: String,
    /// Instructions executed.
    pub instructions: u64,
    /// Cycles busy.
    pub busy_cycles: u64,
    /// Cycles waiting for a dependency token.
    pub stall_token_cycles: u64,
    /// Cycles waiting for the shared PE array.
    pub stall_resource_cycles: u64,
    /// Cycles waiting for a buffer port.
    pub stall_port_cycles: u64,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// Title (model, accelerator, compression).
    pub title: String,
    /// Scenario in words.
    pub scenario: String,
    /// The accelerator's row (first) and the GPUs'.
    pub machines: Vec<MachineRow>,
    /// Roofs: the accelerator's first, then the GPUs'.
    pub roofs: Vec<Roof>,
    /// Phases.
    pub phases: Vec<PhaseView>,
    /// Off-chip bandwidth over one simulated decode step: `(context, slice seconds, GB/s per
    /// slice, streaming GB/s)`.
    pub bandwidth: Option<(u64, f64, Vec<f64>, f64)>,
    /// Per-unit cycles over the simulated decode steps, with the steps' total cycles.
    pub units: Option<(u64, Vec<UnitRow>)>,
}

/// The operator classes as roofline points (`phase: class`).
pub fn roofline_points(phases: &[PhaseView]) -> Vec<RooflinePoint> {
    let mut out = Vec::new();
    for p in phases {
        for c in &p.classes {
            if c.macs == 0 || c.dram_bytes == 0 || c.seconds <= 0.0 {
                continue;
            }
            let ops = 2.0 * c.macs as f64;
            out.push(RooflinePoint {
                label: format!("{}: {}", p.name, c.class),
                intensity: ops / c.dram_bytes as f64,
                ops: ops / c.seconds,
            });
        }
    }
    out
}

/// The HTML page.
pub fn html(v: &RunView) -> Result<String, PlotError> {
    let mut page = Page::new();
    page.paragraph(&v.scenario);
    page.heading("Accelerator and GPUs");
    if let Some(acc) = v.machines.first() {
        let rows: Vec<Vec<String>> = v
            .machines
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    sig(m.prefill_s, 4),
                    sig(m.decode_tokens_per_s, 4),
                    sig(m.energy_per_token_j, 4),
                    ratio(acc.decode_tokens_per_s, m.decode_tokens_per_s),
                    ratio(m.energy_per_token_j, acc.energy_per_token_j),
                    m.tokens_per_s_per_kusd.map_or("—".into(), |v| sig(v, 4)),
                    match (acc.tokens_per_s_per_kusd, m.tokens_per_s_per_kusd) {
                        (Some(a), Some(b)) => ratio(a, b),
                        _ => "—".into(),
                    },
                    if m.fits { "yes".into() } else { "no".into() },
                ]
            })
            .collect();
        page.table(
            &[
                "machine",
                "prefill s",
                "decode tok/s",
                "J/token",
                "accelerator speedup",
                "accelerator energy efficiency",
                "decode tok/s per $1k",
                "accelerator cost efficiency",
                "fits",
            ],
            &rows,
        );
        page.paragraph("Speedup: the accelerator's decode tokens/s over the machine's. Energy efficiency: the machine's joules per token over the accelerator's. Cost efficiency: decode tokens/s per $1,000 of the price given with `tessera run --price` (Tessera ships no prices), the accelerator's over the machine's; — where a price is missing.");
    }
    page.heading("Roofline");
    page.figure(
        "roofline",
        &plots::roofline(&v.roofs, &roofline_points(&v.phases))?,
    );
    for p in &v.phases {
        page.heading(&format!("{} ({})", p.name, p.fidelity));
        let cats: Vec<String> = p.classes.iter().map(|c| c.class.clone()).collect();
        let time: Vec<f64> = p.classes.iter().map(|c| c.seconds).collect();
        let energy: Vec<f64> = p.classes.iter().map(|c| c.energy_j).collect();
        page.figure(
            &format!("{}-classes", p.name),
            &plots::shares(
                &format!("{}: time and energy by operator class", p.name),
                &cats,
                &[("time".into(), time), ("energy".into(), energy)],
            )?,
        );
        let rows: Vec<Vec<String>> = p
            .classes
            .iter()
            .map(|c| {
                vec![
                    c.class.clone(),
                    sig(c.seconds, 4),
                    sig(c.energy_j, 4),
                    c.dram_bytes.to_string(),
                    c.macs.to_string(),
                ]
            })
            .collect();
        page.table(
            &["class", "seconds", "joules", "off-chip bytes", "MACs"],
            &rows,
        );
        let parts: Vec<Vec<String>> = p
            .energy_parts
            .iter()
            .map(|(k, j)| vec![k.clone(), sig(*j, 4)])
            .collect();
        page.table(&["energy part", "joules"], &parts);
    }
    if let Some((total, units)) = &v.units {
        page.heading("Decode by unit (simulation)");
        let pct = |c: u64| format!("{}%", sig(100.0 * c as f64 / (*total).max(1) as f64, 3));
        let rows: Vec<Vec<String>> = units
            .iter()
            .map(|u| {
                vec![
                    u.unit.clone(),
                    u.instructions.to_string(),
                    pct(u.busy_cycles),
                    pct(u.stall_token_cycles),
                    pct(u.stall_resource_cycles),
                    pct(u.stall_port_cycles),
                ]
            })
            .collect();
        page.table(
            &[
                "unit",
                "instructions",
                "busy",
                "waiting for a token",
                "waiting for the PE array",
                "waiting for a port",
            ],
            &rows,
        );
    }
    if let Some((context, slice_s, gbps, streaming)) = &v.bandwidth {
        page.heading("Off-chip bandwidth over a decode step");
        page.paragraph(&format!(
            "The simulated decode step at context {context}, in {} slices of {} µs.",
            gbps.len(),
            sig(slice_s * 1e6, 3)
        ));
        page.figure(
            "bandwidth",
            &plots::timeline(
                "Off-chip bandwidth (simulation)",
                "GB/s",
                *slice_s,
                gbps,
                Some(("streaming bandwidth", *streaming)),
            )?,
        );
    }
    Ok(page.finish(&v.title))
}

fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 && num.is_finite() {
        format!("{}×", sig(num / den, 3))
    } else {
        "—".into()
    }
}
