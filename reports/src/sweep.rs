//! Sweep results: the record types of a results file, the Pareto front, and Markdown and CSV
//! renderings.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One line of the results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Point index.
    pub index: u64,
    /// Hash of the spec and the point's parameters.
    pub input_hash: String,
    /// Axis values.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Summary, when the point ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Why the point could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The figures a sweep keeps per point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Model.
    pub model: String,
    /// Accelerator.
    pub accelerator: String,
    /// Prefill seconds.
    pub prefill_latency_s: f64,
    /// Prefill joules.
    pub prefill_energy_j: f64,
    /// Decode tokens per second (0 for encoders).
    pub decode_tokens_per_s: f64,
    /// Decode tokens per joule (0 for encoders).
    pub decode_tokens_per_j: f64,
    /// Stored weight bytes.
    pub weight_bytes: u64,
    /// Matrix-engine DSPs (FPGA) or MAC units (ASIC): measured for engines the hardware generator
    /// builds (`spec::resource_model`), otherwise one per lane.
    pub dsps: u64,
    /// How the figures were produced.
    pub fidelity: String,
    /// The accelerator's price in US dollars, when its file quotes one (`price_usd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_usd: Option<f64>,
}

impl Summary {
    /// Decode tokens per second per $1,000 of the accelerator's price, when it has one.
    pub fn tokens_per_s_per_kusd(&self) -> Option<f64> {
        crate::tokens_per_s_per_kusd(Some(self.decode_tokens_per_s), self.price_usd)
            .filter(|_| self.decode_tokens_per_s > 0.0)
    }
}

/// The header line of a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Marks the file.
    pub tessera_sweep: u32,
    /// The spec's hash.
    pub spec_hash: String,
    /// Points in the spec.
    pub points: u64,
}

/// Whether `a` is at least as good as `b` in every objective (more tokens/s, more tokens/J, fewer
/// DSPs) and better in one.
fn dominates(a: &Summary, b: &Summary) -> bool {
    let ge = a.decode_tokens_per_s >= b.decode_tokens_per_s
        && a.decode_tokens_per_j >= b.decode_tokens_per_j
        && a.dsps <= b.dsps;
    let gt = a.decode_tokens_per_s > b.decode_tokens_per_s
        || a.decode_tokens_per_j > b.decode_tokens_per_j
        || a.dsps < b.dsps;
    ge && gt
}

/// Indices (into `records`) of the points no other point dominates on decode tokens/s, tokens/J
/// and DSPs, in record order. Points that failed are never on the front.
pub fn pareto_front(records: &[Record]) -> Vec<usize> {
    let ok: Vec<(usize, &Summary)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.summary.as_ref().map(|s| (i, s)))
        .collect();
    ok.iter()
        .filter(|(_, s)| !ok.iter().any(|(_, o)| dominates(o, s)))
        .map(|(i, _)| *i)
        .collect()
}

fn param_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The axis names over all records, in order.
fn axes(records: &[Record]) -> Vec<String> {
    let mut keys: Vec<String> = records
        .iter()
        .flat_map(|r| r.params.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    keys.sort();
    keys
}

/// Whether some point's accelerator quotes a price.
fn priced(records: &[Record]) -> bool {
    records
        .iter()
        .any(|r| r.summary.as_ref().is_some_and(|m| m.price_usd.is_some()))
}

/// CSV with one row per record: index, every axis, the summary figures and the error.
pub fn csv(records: &[Record]) -> String {
    let axes = axes(records);
    let mut s = String::from("index");
    for a in &axes {
        let _ = write!(s, ",{a}");
    }
    s.push_str(",model,accelerator,prefill_latency_s,prefill_energy_j,decode_tokens_per_s,decode_tokens_per_j,weight_bytes,dsps,fidelity,price_usd,decode_tokens_per_s_per_kusd,error\n");
    for r in records {
        let _ = write!(s, "{}", r.index);
        for a in &axes {
            let _ = write!(
                s,
                ",{}",
                r.params.get(a).map(param_text).unwrap_or_default()
            );
        }
        match &r.summary {
            Some(m) => {
                let optional = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
                let _ = write!(
                    s,
                    ",{},{},{},{},{},{},{},{},{},{},{},",
                    m.model,
                    m.accelerator,
                    m.prefill_latency_s,
                    m.prefill_energy_j,
                    m.decode_tokens_per_s,
                    m.decode_tokens_per_j,
                    m.weight_bytes,
                    m.dsps,
                    m.fidelity,
                    optional(m.price_usd),
                    optional(m.tokens_per_s_per_kusd())
                );
            }
            None => s.push_str(",,,,,,,,,,,,"),
        }
        // Quote the error: it may hold commas.
        if let Some(e) = &r.error {
            let _ = write!(s, "\"{}\"", e.replace('"', "'").replace('\n', " "));
        }
        s.push('\n');
    }
    s
}

/// A Markdown report: counts, the Pareto front as a table, and the failed points.
pub fn markdown(title: &str, records: &[Record]) -> String {
    let axes = axes(records);
    let front = pareto_front(records);
    let failed: Vec<&Record> = records.iter().filter(|r| r.error.is_some()).collect();
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "{} points: {} ran, {} could not run. Pareto front on decode tokens/s (higher), tokens/J \
         (higher) and DSPs (fewer): {} points.\n",
        records.len(),
        records.len() - failed.len(),
        failed.len(),
        front.len()
    );
    let _ = writeln!(s, "## Pareto front\n");
    let mut header = String::from("| index |");
    let mut rule = String::from("|---|");
    for a in &axes {
        let _ = write!(header, " {a} |");
        rule.push_str("---|");
    }
    header.push_str(" decode tok/s | tokens/J | prefill s | DSPs |");
    rule.push_str("---|---|---|---|");
    // Cost efficiency when some point's accelerator quotes a price.
    let priced = priced(records);
    if priced {
        header.push_str(" tok/s per $1k |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    for &i in &front {
        let r = &records[i];
        let Some(m) = &r.summary else { continue };
        let mut row = format!("| {} |", r.index);
        for a in &axes {
            let _ = write!(
                row,
                " {} |",
                r.params.get(a).map(param_text).unwrap_or_default()
            );
        }
        let _ = write!(
            row,
            " {:.2} | {:.3} | {:.3e} | {} |",
            m.decode_tokens_per_s, m.decode_tokens_per_j, m.prefill_latency_s, m.dsps
        );
        if priced {
            let cost = m.tokens_per_s_per_kusd();
            let _ = write!(row, " {} |", cost.map_or("—".into(), |v| format!("{v:.3}")));
        }
        let _ = writeln!(s, "{row}");
    }
    if !failed.is_empty() {
        let _ = writeln!(s, "\n## Points that could not run\n");
        for r in failed {
            let params: Vec<String> = r
                .params
                .iter()
                .map(|(k, v)| format!("{k} = {}", param_text(v)))
                .collect();
            let first_line = r
                .error
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("");
            let _ = writeln!(
                s,
                "- point {} ({}): {}",
                r.index,
                params.join(", "),
                first_line
            );
        }
    }
    s
}

/// The sweep as a self-contained HTML page: the design points and their Pareto front plotted
/// (decode tokens/s against tokens/J), the front's table, every point's table and the points that
/// could not run.
pub fn html(title: &str, records: &[Record]) -> Result<String, crate::plots::PlotError> {
    use crate::html::{sig, Page};
    let axes = axes(records);
    let front = pareto_front(records);
    let ran: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].summary.is_some())
        .collect();
    let points: Vec<(f64, f64)> = ran
        .iter()
        .map(|&i| {
            let m = records[i].summary.as_ref().expect("ran");
            (m.decode_tokens_per_s, m.decode_tokens_per_j)
        })
        .collect();
    let front_in_points: Vec<usize> = front
        .iter()
        .filter_map(|f| ran.iter().position(|r| r == f))
        .collect();
    let mut page = Page::new();
    page.paragraph(&format!(
        "{} points: {} ran, {} could not run. Pareto front on decode tokens/s (higher), tokens/J (higher) and DSPs (fewer): {} points.",
        records.len(),
        ran.len(),
        records.len() - ran.len(),
        front.len()
    ));
    page.figure(
        "pareto",
        &crate::plots::pareto(
            "decode tokens/s",
            "decode tokens/J",
            &points,
            &front_in_points,
        )?,
    );
    let mut header: Vec<&str> = vec!["index"];
    header.extend(axes.iter().map(String::as_str));
    header.extend(["decode tok/s", "tokens/J", "prefill s", "DSPs", "fidelity"]);
    // Cost efficiency when some point's accelerator quotes a price.
    let priced = priced(records);
    if priced {
        header.push("tok/s per $1k");
    }
    let row = |r: &Record| -> Vec<String> {
        let m = r.summary.as_ref().expect("ran");
        let mut row = vec![r.index.to_string()];
        row.extend(
            axes.iter()
                .map(|a| r.params.get(a).map(param_text).unwrap_or_default()),
        );
        row.extend([
            sig(m.decode_tokens_per_s, 4),
            sig(m.decode_tokens_per_j, 4),
            sig(m.prefill_latency_s, 4),
            m.dsps.to_string(),
            m.fidelity.clone(),
        ]);
        if priced {
            row.push(m.tokens_per_s_per_kusd().map_or("—".into(), |v| sig(v, 4)));
        }
        row
    };
    page.heading("Pareto front");
    page.table(
        &header,
        &front.iter().map(|&i| row(&records[i])).collect::<Vec<_>>(),
    );
    page.heading("Every point");
    page.table(
        &header,
        &ran.iter().map(|&i| row(&records[i])).collect::<Vec<_>>(),
    );
    let failed: Vec<Vec<String>> = records
        .iter()
        .filter_map(|r| {
            r.error.as_ref().map(|e| {
                let params: Vec<String> = r
                    .params
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", param_text(v)))
                    .collect();
                vec![r.index.to_string(), params.join(", "), e.clone()]
            })
        })
        .collect();
    if !failed.is_empty() {
        page.heading("Points that could not run");
        page.table(&["index", "parameters", "error"], &failed);
    }
    Ok(page.finish(title))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64, tps: f64, tpj: f64, dsps: u64) -> Record {
        Record {
            index,
            input_hash: String::new(),
            params: BTreeMap::from([("x".to_string(), serde_json::json!(index))]),
            summary: Some(Summary {
                model: "m".into(),
                accelerator: "a".into(),
                prefill_latency_s: 1.0,
                prefill_energy_j: 1.0,
                decode_tokens_per_s: tps,
                decode_tokens_per_j: tpj,
                weight_bytes: 1,
                dsps,
                fidelity: "roofline".into(),
                price_usd: None,
            }),
            error: None,
        }
    }

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let records = vec![
            rec(0, 10.0, 1.0, 100), // dominated by 1
            rec(1, 20.0, 2.0, 100),
            rec(2, 30.0, 1.0, 400), // fastest
            rec(3, 5.0, 1.0, 10),   // cheapest
            rec(4, 20.0, 2.0, 100), // ties with 1: neither dominates
        ];
        assert_eq!(pareto_front(&records), vec![1, 2, 3, 4]);
        let mut failed = rec(5, 0.0, 0.0, 0);
        failed.summary = None;
        failed.error = Some("no".into());
        let mut with_failed = records.clone();
        with_failed.push(failed);
        assert_eq!(pareto_front(&with_failed), vec![1, 2, 3, 4]);
        let md = markdown("t", &with_failed);
        assert!(md.contains("6 points: 5 ran, 1 could not run"), "{md}");
        assert!(md.contains("- point 5 (x = 5): no"), "{md}");
        let csv = csv(&with_failed);
        assert_eq!(csv.lines().count(), 7);
        assert!(csv.lines().last().unwrap().ends_with(",\"no\""), "{csv}");
        // Without prices no cost column; the CSV's price fields stay empty.
        assert!(!md.contains("per $1k"), "{md}");
        assert!(
            csv.lines().nth(1).unwrap().ends_with(",roofline,,,"),
            "{csv}"
        );
    }

    #[test]
    fn quoted_prices_give_cost_efficiency() {
        let mut records = vec![rec(0, 20.0, 2.0, 100), rec(1, 30.0, 1.0, 400)];
        if let Some(m) = records[0].summary.as_mut() {
            m.price_usd = Some(4000.0);
        }
        assert_eq!(
            records[0].summary.as_ref().unwrap().tokens_per_s_per_kusd(),
            Some(5.0)
        );
        assert_eq!(
            records[1].summary.as_ref().unwrap().tokens_per_s_per_kusd(),
            None
        );
        let md = markdown("t", &records);
        assert!(md.contains("| tok/s per $1k |"), "{md}");
        assert!(md.contains("| 100 | 5.000 |"), "{md}");
        assert!(md.contains("| 400 | — |"), "{md}");
        let csv = csv(&records);
        assert!(
            csv.lines().nth(1).unwrap().ends_with(",roofline,4000,5,"),
            "{csv}"
        );
        let html = html("t", &records).unwrap();
        assert!(html.contains("tok/s per $1k"));
    }
}
