//! GPU baselines as data: datasheet peaks (REFERENCE.md, GPU table; dense figures) and serving
//! stacks that say what fraction of those peaks a software stack achieves.

use crate::error::{Problem, SpecError};
use crate::units::BytesPerSecond;
use serde::Serialize;

/// One GPU's datasheet figures (dense, not 2:4-sparse).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gpu {
    /// Short name used on the command line.
    pub name: &'static str,
    /// Memory capacity in GB (10^9 bytes).
    pub memory_gb: f64,
    /// Peak memory bandwidth in GB/s.
    pub bandwidth_gbps: f64,
    /// Dense FP16/BF16 tensor throughput in TFLOP/s.
    pub fp16_tflops: f64,
    /// Dense INT8 tensor throughput in TOP/s; `None` where the GPU has no INT8 tensor cores.
    pub int8_tops: Option<f64>,
    /// Board power (TDP) in watts.
    pub tdp_watts: f64,
    /// Where the figures come from.
    pub source: &'static str,
}

const DS: &str = "vendor datasheet (REFERENCE.md GPU table, dense figures)";

/// Every GPU in the reference table.
pub const GPUS: &[Gpu] = &[
    Gpu {
        name: "v100-sxm2",
        memory_gb: 32.0,
        bandwidth_gbps: 900.0,
        fp16_tflops: 125.0,
        int8_tops: None,
        tdp_watts: 300.0,
        source: DS,
    },
    Gpu {
        name: "v100s-pcie",
        memory_gb: 32.0,
        bandwidth_gbps: 1134.0,
        fp16_tflops: 130.0,
        int8_tops: None,
        tdp_watts: 250.0,
        source: DS,
    },
    Gpu {
        name: "a100-40gb-sxm4",
        memory_gb: 40.0,
        bandwidth_gbps: 1555.0,
        fp16_tflops: 312.0,
        int8_tops: Some(624.0),
        tdp_watts: 400.0,
        source: DS,
    },
    Gpu {
        name: "a100-80gb-sxm4",
        memory_gb: 80.0,
        bandwidth_gbps: 2039.0,
        fp16_tflops: 312.0,
        int8_tops: Some(624.0),
        tdp_watts: 400.0,
        source: DS,
    },
    Gpu {
        name: "a100-80gb-pcie",
        memory_gb: 80.0,
        bandwidth_gbps: 1935.0,
        fp16_tflops: 312.0,
        int8_tops: Some(624.0),
        tdp_watts: 300.0,
        source: DS,
    },
    Gpu {
        name: "h100-sxm5",
        memory_gb: 80.0,
        bandwidth_gbps: 3350.0,
        fp16_tflops: 989.0,
        int8_tops: Some(1979.0),
        tdp_watts: 700.0,
        source: DS,
    },
    Gpu {
        name: "h100-pcie",
        memory_gb: 80.0,
        bandwidth_gbps: 2000.0,
        fp16_tflops: 756.0,
        int8_tops: Some(1513.0),
        tdp_watts: 350.0,
        source: DS,
    },
    Gpu {
        name: "h200-sxm",
        memory_gb: 141.0,
        bandwidth_gbps: 4800.0,
        fp16_tflops: 989.0,
        int8_tops: Some(1979.0),
        tdp_watts: 700.0,
        source: DS,
    },
    Gpu {
        name: "l4",
        memory_gb: 24.0,
        bandwidth_gbps: 300.0,
        fp16_tflops: 121.0,
        int8_tops: Some(242.0),
        tdp_watts: 72.0,
        source: DS,
    },
    Gpu {
        name: "rtx4090",
        memory_gb: 24.0,
        bandwidth_gbps: 1008.0,
        fp16_tflops: 165.0,
        int8_tops: Some(661.0),
        tdp_watts: 450.0,
        source: "vendor datasheet (REFERENCE.md; fp16 with fp32 accumulation)",
    },
];

/// GPUs shown beside an accelerator when none are named.
pub const DEFAULT_GPUS: &[&str] = &["v100s-pcie", "a100-80gb-sxm4", "h100-sxm5"];

/// What fraction of a GPU's peaks a serving stack achieves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServingStack {
    /// Short name.
    pub name: &'static str,
    /// Fraction of peak tensor throughput achieved on matrix work.
    pub compute_efficiency: f64,
    /// Fraction of peak memory bandwidth achieved.
    pub bandwidth_efficiency: f64,
    /// Where the fractions come from.
    pub source: &'static str,
}

/// Serving stacks a baseline can stand for.
pub const STACKS: &[ServingStack] = &[
    ServingStack {
        name: "roofline",
        compute_efficiency: 1.0,
        bandwidth_efficiency: 1.0,
        source: "ideal: datasheet peaks, an upper bound on any GPU software",
    },
    ServingStack {
        name: "tuned",
        compute_efficiency: 0.7,
        bandwidth_efficiency: 0.775,
        source: "bandwidth: midpoint of the 70-85% REFERENCE.md quotes for tuned serving stacks; \
                 compute: placeholder (?), calibrate against a measurement",
    },
];

/// The stack baselines use unless told otherwise: the ideal roofline, so that an accelerator's
/// advantage is never overstated.
pub const DEFAULT_STACK: &str = "roofline";

impl Gpu {
    /// The GPU called `name` (case-insensitive).
    pub fn by_name(name: &str) -> Result<Gpu, SpecError> {
        GPUS.iter()
            .find(|g| g.name.eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| {
                SpecError::one(
                    "--gpu",
                    Problem::new(
                        "gpu",
                        format!("unknown GPU `{name}`"),
                        format!("known GPUs: {}", names(GPUS.iter().map(|g| g.name))),
                    ),
                )
            })
    }

    /// Peak memory bandwidth.
    pub fn bandwidth(&self) -> BytesPerSecond {
        BytesPerSecond(self.bandwidth_gbps * 1e9)
    }

    /// Peak matrix operations per second (2 per MAC) for int8 or fp16 activations: int8 tensor
    /// cores where the GPU has them and the activations are int8, fp16 otherwise.
    pub fn peak_ops(&self, int8_activations: bool) -> f64 {
        match (int8_activations, self.int8_tops) {
            (true, Some(tops)) => tops * 1e12,
            _ => self.fp16_tflops * 1e12,
        }
    }

    /// Memory capacity in bytes.
    pub fn memory_bytes(&self) -> u64 {
        (self.memory_gb * 1e9) as u64
    }
}

impl ServingStack {
    /// The stack called `name`.
    pub fn by_name(name: &str) -> Result<ServingStack, SpecError> {
        STACKS
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| {
                SpecError::one(
                    "--gpu-stack",
                    Problem::new(
                        "gpu_stack",
                        format!("unknown serving stack `{name}`"),
                        format!("known stacks: {}", names(STACKS.iter().map(|s| s.name))),
                    ),
                )
            })
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_reference() {
        let h100 = Gpu::by_name("H100-SXM5").unwrap();
        assert_eq!(h100.bandwidth().gb_per_s(), 3350.0);
        assert_eq!(h100.peak_ops(false), 989e12);
        assert_eq!(h100.peak_ops(true), 1979e12);
        let v100 = Gpu::by_name("v100s-pcie").unwrap();
        assert_eq!(
            v100.peak_ops(true),
            130e12,
            "no int8 tensor cores: fp16 path"
        );
        for d in DEFAULT_GPUS {
            assert!(Gpu::by_name(d).is_ok());
        }
        assert!(ServingStack::by_name(DEFAULT_STACK).is_ok());
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = Gpu::by_name("b200").unwrap_err().to_string();
        assert!(e.contains("h100-sxm5"), "{e}");
        let e = ServingStack::by_name("eager").unwrap_err().to_string();
        assert!(e.contains("roofline"), "{e}");
    }
}
