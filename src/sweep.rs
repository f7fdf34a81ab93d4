//! Design-space sweeps: a spec of a base point and axes over dotted keys, expanded to points, run
//! in parallel and appended to a JSON-lines results file that a rerun resumes.
//!
//! Sweep spec (TOML):
//! ```toml
//! [base]
//! model = "llama2-7b"        # preset or config.json path
//! accel = "u280"             # preset or TOML path
//! compression = "w4a8-g128"  # preset or TOML path
//! batch = 1
//! prefill = 512
//! decode = 128
//!
//! [sampling]                 # optional
//! mode = "grid"              # grid (every combination) | random (`samples` points, seeded)
//! samples = 100
//! seed = 1
//!
//! [constraints]              # optional: points beyond these are recorded as excluded
//! max_dsps = 9024
//! max_on_chip_bytes = 41943040
//! max_area_mm2 = 10.0
//!
//! [axes]                     # dotted keys into the accelerator, compression or scenario
//! "accel.matrix.rows" = [8, 16, 32]
//! "compression.weights.bits" = [4, 8]
//! "scenario.decode" = [128, 512]
//! "model" = ["llama2-7b", "gpt2"]
//! ```
//!
//! Results file: the first line is a header naming the spec's hash; each further line is one
//! finished point (its index, input hash, parameters and summary, or the error that point met).
//! Lines are written whole and flushed; a rerun skips finished points and drops a torn last line.

use crate::inputs;
use crate::pipeline::{run, LayerMode, RunInputs};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
pub use tessera_reports::sweep::{Header, Record, Summary};
use tessera_spec::accel::Accelerator;
use tessera_spec::compression;
use tessera_spec::error::{from_toml_text, Problem, SpecError};
use tessera_spec::gpu::ServingStack;
use tessera_spec::scenario::Scenario;

/// The parsed sweep spec.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// The point every axis varies from.
    pub base: Base,
    /// How points are drawn from the axes.
    #[serde(default)]
    pub sampling: Sampling,
    /// Axis key → values.
    pub axes: BTreeMap<String, Vec<toml::Value>>,
    /// Limits a point must meet to be run; points outside are recorded as excluded.
    #[serde(default)]
    pub constraints: Constraints,
}

/// Limits on a point's accelerator.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Most matrix-engine DSPs (FPGA) or MAC units (ASIC).
    pub max_dsps: Option<u64>,
    /// Most on-chip buffer bytes.
    pub max_on_chip_bytes: Option<u64>,
    /// Largest total ASIC area in mm² (from `resources.asic.area`).
    pub max_area_mm2: Option<f64>,
}

impl Constraints {
    /// Why `accel` breaks a limit, if it does.
    pub fn violation(&self, accel: &Accelerator) -> Option<String> {
        let dsps = tessera_spec::resource_model::engine_dsps(accel.matrix());
        if let Some(max) = self.max_dsps.filter(|&m| dsps > m) {
            return Some(format!(
                "excluded: {dsps} DSPs exceed constraints.max_dsps = {max}"
            ));
        }
        let bytes = accel.on_chip_bytes().0;
        if let Some(max) = self.max_on_chip_bytes.filter(|&m| bytes > m) {
            return Some(format!(
                "excluded: {bytes} on-chip bytes exceed constraints.max_on_chip_bytes = {max}"
            ));
        }
        let area = accel.resources().area_mm2();
        if let Some(max) = self.max_area_mm2.filter(|&m| area > m) {
            return Some(format!(
                "excluded: {area} mm2 exceeds constraints.max_area_mm2 = {max}"
            ));
        }
        None
    }
}

/// The base point.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Model preset or path.
    pub model: String,
    /// Accelerator preset or path.
    pub accel: String,
    /// Compression preset or path.
    pub compression: String,
    /// Sequences per batch.
    #[serde(default = "one")]
    pub batch: u64,
    /// Prompt tokens.
    pub prefill: u64,
    /// Generated tokens.
    pub decode: u64,
    /// Which model produces each point's prefill and decode figures.
    #[serde(default)]
    pub fidelity: SweepFidelity,
    /// With simulation fidelity: decode contexts share one program per bucket of this many
    /// tokens.
    #[serde(default = "sixteen")]
    pub bucket: u64,
    /// With simulation fidelity: the prompt rounds up to a multiple of this many tokens for the
    /// compiled prefill.
    #[serde(default = "one_hundred_twenty_eight")]
    pub prefill_bucket: u64,
    /// With simulation fidelity: simulate each program with one and with three decoder layers
    /// (more when short layers need them to span 32 DRAM refresh intervals) and extrapolate to
    /// all of them instead of simulating every layer.
    #[serde(default)]
    pub layer_reuse: bool,
}

/// `base.fidelity`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepFidelity {
    /// The analytical model.
    #[default]
    Roofline,
    /// Compiled prefill and decode programs in the cycle-accurate simulator.
    Simulation,
}

fn one() -> u64 {
    1
}

fn sixteen() -> u64 {
    16
}

fn one_hundred_twenty_eight() -> u64 {
    128
}

/// How points are drawn.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// `grid` or `random`.
    #[serde(default = "grid")]
    pub mode: String,
    /// Points drawn in random mode.
    #[serde(default)]
    pub samples: u64,
    /// Seed of random mode.
    #[serde(default)]
    pub seed: u64,
}

fn grid() -> String {
    "grid".into()
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            mode: grid(),
            samples: 0,
            seed: 0,
        }
    }
}

/// One point: its index in the expansion and the value of every axis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Index among all points of the spec.
    pub index: u64,
    /// Axis key → value.
    pub params: BTreeMap<String, toml::Value>,
}

/// 64-bit FNV-1a: a stable hash for input identities (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl SweepSpec {
    /// Parses and checks a spec; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<SweepSpec, SpecError> {
        let spec: SweepSpec = from_toml_text(text, file)?;
        let mut problems = Vec::new();
        if spec.axes.is_empty() {
            problems.push(Problem::new(
                "axes",
                "the sweep has no axes",
                "add at least one axis under [axes]",
            ));
        }
        for (key, values) in &spec.axes {
            let root = key.split('.').next().unwrap_or("");
            if !["accel", "compression", "scenario", "model"].contains(&root)
                || (root == "model" && key != "model")
            {
                problems.push(Problem::new(
                    format!("axes.\"{key}\""),
                    "the axis names no known document",
                    "axes start with accel., compression. or scenario., or are exactly \"model\"",
                ));
            }
            if values.is_empty() {
                problems.push(Problem::new(
                    format!("axes.\"{key}\""),
                    "the axis has no values",
                    "give at least one value",
                ));
            }
        }
        match spec.sampling.mode.as_str() {
            "grid" => {}
            "random" if spec.sampling.samples > 0 => {}
            "random" => problems.push(Problem::new(
                "sampling.samples",
                "random sampling needs samples >= 1",
                "set samples",
            )),
            other => problems.push(Problem::new(
                "sampling.mode",
                format!("`{other}` is not a sampling mode"),
                "allowed: grid, random",
            )),
        }
        SpecError::check(file, problems)?;
        Ok(spec)
    }

    /// Stable identity of the spec (its canonical JSON), written in the results header.
    pub fn hash(&self) -> u64 {
        fnv1a(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    /// Every point, in index order: the full grid (last axis fastest, axes in key order), or
    /// `samples` seeded random picks.
    pub fn points(&self) -> Vec<Point> {
        let axes: Vec<(&String, &Vec<toml::Value>)> = self.axes.iter().collect();
        let total: u64 = axes.iter().map(|(_, v)| v.len() as u64).product();
        let pick = |mut i: u64| {
            let mut params = BTreeMap::new();
            for (key, values) in axes.iter().rev() {
                let n = values.len() as u64;
                params.insert((*key).clone(), values[(i % n) as usize].clone());
                i /= n;
            }
            params
        };
        match self.sampling.mode.as_str() {
            "random" => {
                let mut state = self.sampling.seed ^ 0x9e37_79b9_7f4a_7c15;
                (0..self.sampling.samples)
                    .map(|index| {
                        // splitmix64
                        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        let mut z = state;
                        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                        Point {
                            index,
                            params: pick((z ^ (z >> 31)) % total.max(1)),
                        }
                    })
                    .collect()
            }
            _ => (0..total)
                .map(|index| Point {
                    index,
                    params: pick(index),
                })
                .collect(),
        }
    }
}

/// Sets `value` at the dotted `path` inside `doc`; the key must exist and keep its type.
fn set_path(
    doc: &mut toml::Value,
    path: &str,
    value: &toml::Value,
    axis: &str,
) -> Result<(), SpecError> {
    let mut cur = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let next = match cur {
            toml::Value::Table(t) => t.get_mut(*part),
            toml::Value::Array(a) => part.parse::<usize>().ok().and_then(|k| a.get_mut(k)),
            _ => None,
        };
        let Some(next) = next else {
            return Err(SpecError::one(
                "sweep",
                Problem::new(
                    format!("axes.\"{axis}\""),
                    format!("`{}` does not exist in the base document", parts[..=i].join(".")),
                    "use a key that the base file has (array elements by index, e.g. memories.0.channels)",
                ),
            ));
        };
        cur = next;
    }
    let same_type = std::mem::discriminant(cur) == std::mem::discriminant(value)
        || matches!(
            (&*cur, value),
            (toml::Value::Float(_), toml::Value::Integer(_))
        );
    if !same_type {
        return Err(SpecError::one(
            "sweep",
            Problem::new(
                format!("axes.\"{axis}\""),
                format!(
                    "value {value} has type {}, but the key holds a {}",
                    value.type_str(),
                    cur.type_str()
                ),
                "give values of the key's type",
            ),
        ));
    }
    *cur = match (&*cur, value) {
        (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
        _ => value.clone(),
    };
    Ok(())
}

fn base_doc(
    arg: &str,
    preset_text: impl Fn(&str) -> Option<&'static str>,
) -> Result<(String, toml::Value)> {
    let (label, text) = match preset_text(arg) {
        Some(t) if !std::path::Path::new(arg).exists() => (arg.to_string(), t.to_string()),
        _ => (arg.to_string(), inputs::read(arg)?),
    };
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| SpecError::from_toml_syntax(&label, &text, &e))?;
    Ok((label, value))
}

/// Builds the run inputs of one point.
pub fn point_inputs(spec: &SweepSpec, point: &Point) -> Result<RunInputs> {
    let (accel_label, mut accel_doc) = base_doc(&spec.base.accel, Accelerator::preset_text)?;
    let (comp_label, mut comp_doc) = base_doc(&spec.base.compression, compression::preset_text)?;
    let mut scenario_doc = toml::Value::try_from(Scenario {
        batch: spec.base.batch,
        prefill: spec.base.prefill,
        decode: spec.base.decode,
    })?;
    let mut model = spec.base.model.clone();
    let mut touched = BTreeSet::new();
    for (key, value) in &point.params {
        match key.split_once('.') {
            Some(("accel", path)) => set_path(&mut accel_doc, path, value, key)?,
            Some(("compression", path)) => set_path(&mut comp_doc, path, value, key)?,
            Some(("scenario", path)) => set_path(&mut scenario_doc, path, value, key)?,
            _ if key == "model" => match value.as_str() {
                Some(m) => model = m.to_string(),
                None => bail!("axis \"model\": {value} is not a model name"),
            },
            _ => bail!("axis \"{key}\" names no known document"),
        }
        touched.insert(key.split('.').next().unwrap_or(""));
    }
    let accel = Accelerator::from_toml_value(accel_doc, &accel_label)?;
    let compression = compression::from_toml_value(comp_doc, &comp_label)?;
    let scenario: Scenario = scenario_doc.try_into().context("scenario axis values")?;
    Ok(RunInputs {
        model: inputs::model(&model)?,
        compression,
        accel,
        scenario,
        gpus: Vec::new(),
        stack: ServingStack::by_name("roofline")?,
        fidelity: match spec.base.fidelity {
            SweepFidelity::Roofline => crate::pipeline::Fidelity::Roofline,
            SweepFidelity::Simulation => crate::pipeline::Fidelity::Simulation {
                bucket: spec.base.bucket.max(1),
                prefill_bucket: spec.base.prefill_bucket.max(1),
                layer_reuse: spec.base.layer_reuse,
            },
        },
    })
}

fn run_point(spec: &SweepSpec, spec_hash: u64, point: &Point) -> Record {
    let params: BTreeMap<String, serde_json::Value> = point
        .params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    let identity = format!(
        "{spec_hash:016x}:{}",
        serde_json::to_string(&params).unwrap_or_default()
    );
    let input_hash = format!("{:016x}", fnv1a(identity.as_bytes()));
    let outcome = point_inputs(spec, point).and_then(|inputs| {
        if let Some(why) = spec.constraints.violation(&inputs.accel) {
            bail!(why);
        }
        let r = run(&inputs)?;
        Ok(Summary {
            model: r.model,
            accelerator: r.accelerator,
            prefill_latency_s: r.prefill.latency_s,
            prefill_energy_j: r.prefill.energy_j,
            decode_tokens_per_s: r.decode.as_ref().map_or(0.0, |d| d.tokens_per_s),
            decode_tokens_per_j: r.decode.as_ref().map_or(0.0, |d| d.tokens_per_j),
            weight_bytes: r.weight_bytes,
            dsps: tessera_spec::resource_model::engine_dsps(inputs.accel.matrix()),
            fidelity: match r.prefill.simulation.as_ref().map(|s| s.layers) {
                Some(LayerMode::LayerReuse) => format!("{} (layer reuse)", r.fidelity),
                _ => r.fidelity.to_string(),
            },
            price_usd: r.price_usd,
        })
    });
    let (summary, error) = match outcome {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Record {
        index: point.index,
        input_hash,
        params,
        summary,
        error,
    }
}

/// Reads a results file: its header and finished records. A torn last line (no newline) is
/// dropped and the file truncated to the last whole line.
pub fn read_results(path: &str) -> Result<Option<(Header, Vec<Record>)>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    if whole.len() != text.len() {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(whole.len() as u64)?;
    }
    let mut lines = whole.lines().enumerate();
    let Some((_, first)) = lines.next() else {
        return Ok(None);
    };
    let header: Header = serde_json::from_str(first)
        .with_context(|| format!("{path}:1: not a Tessera sweep results file"))?;
    let mut records = Vec::new();
    for (i, line) in lines {
        records.push(
            serde_json::from_str(line)
                .with_context(|| format!("{path}:{}: unreadable record", i + 1))?,
        );
    }
    Ok(Some((header, records)))
}

/// Runs (or resumes) a sweep, appending to `out`. `shard` is `(i, n)`: only points with
/// `index % n == i`. Points run in parallel in chunks; each chunk is written in index order.
pub fn run_sweep(spec: &SweepSpec, out: &str, shard: (u64, u64), progress: bool) -> Result<usize> {
    use rayon::prelude::*;
    let spec_hash = spec.hash();
    let points: Vec<Point> = spec
        .points()
        .into_iter()
        .filter(|p| p.index % shard.1 == shard.0)
        .collect();
    let header = Header {
        tessera_sweep: 1,
        spec_hash: format!("{spec_hash:016x}"),
        points: spec.points().len() as u64,
    };
    let done: BTreeSet<u64> = match read_results(out)? {
        Some((h, records)) => {
            if h.spec_hash != header.spec_hash {
                bail!(
                    "`{out}` holds results of a different sweep spec (hash {}, this spec {}); \
                     choose another output file",
                    h.spec_hash,
                    header.spec_hash
                );
            }
            records.iter().map(|r| r.index).collect()
        }
        None => {
            let mut f =
                std::fs::File::create(out).with_context(|| format!("cannot create `{out}`"))?;
            writeln!(f, "{}", serde_json::to_string(&header)?)?;
            f.sync_data()?;
            BTreeSet::new()
        }
    };
    let todo: Vec<&Point> = points.iter().filter(|p| !done.contains(&p.index)).collect();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(out)
        .with_context(|| format!("cannot append to `{out}`"))?;
    let bar = crate::progress::Progress::new(todo.len(), done.len(), progress);
    let chunk = (rayon::current_num_threads() * 4).max(1);
    let mut finished = 0;
    for batch in todo.chunks(chunk) {
        let records: Vec<Record> = batch
            .par_iter()
            .map(|p| {
                let r = run_point(spec, spec_hash, p);
                bar.tick();
                r
            })
            .collect();
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        finished += records.len();
    }
    Ok(finished)
}

/// Joins shard files of one spec into `out`, each point once, in index order. Record lines are
/// copied byte for byte.
pub fn merge(inputs: &[String], out: &str) -> Result<usize> {
    let mut header: Option<(Header, String)> = None;
    let mut lines: BTreeMap<u64, String> = BTreeMap::new();
    for path in inputs {
        if read_results(path)?.is_none() {
            bail!("`{path}` is empty or missing");
        }
        let text = std::fs::read_to_string(path)?;
        let mut it = text.lines();
        let first = it.next().unwrap_or_default();
        let h: Header = serde_json::from_str(first)?;
        match &header {
            Some((prev, _)) if prev.spec_hash != h.spec_hash => {
                bail!(
                    "`{path}` comes from a different sweep spec than `{}`",
                    inputs[0]
                )
            }
            Some(_) => {}
            None => header = Some((h, first.to_string())),
        }
        for line in it {
            let r: Record = serde_json::from_str(line)?;
            lines.entry(r.index).or_insert_with(|| line.to_string());
        }
    }
    let Some((_, header_line)) = header else {
        bail!("nothing to merge");
    };
    let mut text = header_line + "\n";
    for line in lines.values() {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(out, text).with_context(|| format!("cannot write `{out}`"))?;
    Ok(lines.len())
}
