//! Validation of a parsed accelerator: ranges, cross-references and budgets, all problems at once.

use super::{activation_name, Accelerator, Holds, TargetKind};
use crate::error::{Checker, SpecError};
use std::collections::BTreeSet;

fn finite_positive(c: &mut Checker, key: &str, v: f64, hi: f64) {
    if !v.is_finite() || v <= 0.0 || v > hi {
        c.push(
            key,
            format!("{v} is out of range"),
            format!("allowed: > 0 and <= {hi}"),
        );
    }
}

fn source(c: &mut Checker, key: &str, s: &str) {
    if s.trim().is_empty() {
        c.push(
            key,
            "the source is empty",
            "say where the figure comes from (datasheet, paper, measurement, or \"placeholder (?)\")",
        );
    }
}

/// Checks everything a parsed accelerator must satisfy.
pub(super) fn validate(a: &Accelerator, file: &str) -> Result<(), SpecError> {
    let mut c = Checker::new();
    if a.name.trim().is_empty() {
        c.push("name", "the name is empty", "give the accelerator a name");
    }
    finite_positive(&mut c, "clock_mhz", a.clock_mhz, 10_000.0);
    if let Some(usd) = a.price_usd {
        finite_positive(&mut c, "price_usd", usd, 1e9);
    }

    let m = &a.matrix;
    c.range_u64("matrix.rows", m.rows, 1, 4096);
    c.range_u64("matrix.cols", m.cols, 1, 4096);
    c.range_u64("matrix.chain", m.chain, 1, 1024);
    c.range_u64("matrix.pipeline_depth", m.pipeline_depth, 0, 4096);
    c.range_u64(
        "matrix.dequant_cycles_per_group",
        m.dequant_cycles_per_group,
        0,
        1024,
    );
    if m.precisions.is_empty() {
        c.push(
            "matrix.precisions",
            "no precision is supported",
            "list at least one weight × activation pair",
        );
    }
    let mut pairs = BTreeSet::new();
    for (i, p) in m.precisions.iter().enumerate() {
        finite_positive(
            &mut c,
            &format!("matrix.precisions[{i}].macs_per_dsp"),
            p.macs_per_dsp,
            64.0,
        );
        if !pairs.insert((p.weight, p.activation)) {
            c.push(
                format!("matrix.precisions[{i}]"),
                format!("{p} is listed twice"),
                "list each weight × activation pair once",
            );
        }
    }
    for (i, &n) in m.sparse.nm.iter().enumerate() {
        c.range_u64(&format!("matrix.sparse.nm[{i}]"), n as u64, 1, 16);
    }
    if m.sparse.block_skip != 0 && !(8..=256).contains(&m.sparse.block_skip) {
        c.push(
            "matrix.sparse.block_skip",
            format!("{} is out of range", m.sparse.block_skip),
            "allowed: 0 (no block skipping) or 8 ..= 256",
        );
    }
    for (i, &g) in m.group_sizes.iter().enumerate() {
        let key = format!("matrix.group_sizes[{i}]");
        c.range_u64(&key, g as u64, 8, 4096);
        c.power_of_two(&key, g as u64);
    }

    let v = &a.vector;
    c.range_u64("vector.lanes", v.lanes, 1, 65_536);
    for op in super::SfuOp::ALL {
        let key = format!("vector.ops.{}", op.name());
        match v.ops.get(&op) {
            None => c.push(
                &key,
                "missing",
                "every vector operation needs latency and throughput",
            ),
            Some(cost) => {
                c.range_u64(&format!("{key}.latency"), cost.latency, 0, 100_000);
                finite_positive(
                    &mut c,
                    &format!("{key}.elements_per_lane_per_cycle"),
                    cost.elements_per_lane_per_cycle,
                    1024.0,
                );
                c.range_u64(&format!("{key}.passes"), cost.passes, 1, 4);
            }
        }
    }

    if a.buffers.is_empty() {
        c.push(
            "buffers",
            "no on-chip buffer",
            "add at least one [[buffers]] entry",
        );
    }
    let mut names = BTreeSet::new();
    for (i, b) in a.buffers.iter().enumerate() {
        let key = format!("buffers[{i}]");
        if !names.insert(b.name.as_str()) {
            c.push(
                format!("{key}.name"),
                format!("`{}` is used twice", b.name),
                "buffer names must be unique",
            );
        }
        c.range_u64(&format!("{key}.bytes"), b.bytes, 1, 1 << 40);
        c.range_u64(&format!("{key}.banks"), b.banks, 1, 4096);
        c.range_u64(&format!("{key}.ports"), b.ports, 1, 4);
        c.range_u64(&format!("{key}.word_bits"), b.word_bits, 8, 4096);
        if b.word_bits % 8 != 0 {
            c.push(
                format!("{key}.word_bits"),
                format!("{} is not a whole number of bytes", b.word_bits),
                "use a multiple of 8",
            );
        }
        // Out-of-range banks or word size are reported above; only check the stripe when it exists.
        let stripe = b.banks.checked_mul((b.word_bits / 8).max(1)).unwrap_or(0);
        if stripe != 0 && b.bytes % stripe != 0 {
            c.push(
                format!("{key}.bytes"),
                format!(
                    "{} bytes do not divide into {} banks of {}-bit words",
                    b.bytes, b.banks, b.word_bits
                ),
                format!("use a multiple of {stripe} bytes"),
            );
        }
    }

    if a.memories.is_empty() {
        c.push(
            "memories",
            "no off-chip memory",
            "add at least one [[memories]] entry",
        );
    }
    let mut mem_names = BTreeSet::new();
    for (i, mem) in a.memories.iter().enumerate() {
        let key = format!("memories[{i}]");
        if !mem_names.insert(mem.name.as_str()) {
            c.push(
                format!("{key}.name"),
                format!("`{}` is used twice", mem.name),
                "memory names must be unique",
            );
        }
        c.range_u64(&format!("{key}.channels"), mem.channels, 1, 1024);
        finite_positive(
            &mut c,
            &format!("{key}.channel_gbps"),
            mem.channel_gbps,
            10_000.0,
        );
        finite_positive(
            &mut c,
            &format!("{key}.capacity_gib"),
            mem.capacity_gib,
            1_048_576.0,
        );
        c.range_u64(&format!("{key}.bus_bits"), mem.bus_bits, 8, 2048);
        c.power_of_two(&format!("{key}.bus_bits"), mem.bus_bits);
        if mem.holds.is_empty() {
            c.push(
                format!("{key}.holds"),
                "holds nothing",
                "list some of: weights, kv, activations, instructions",
            );
        }
        let t = &mem.timing;
        let tk = format!("{key}.timing");
        c.range_u64(&format!("{tk}.banks"), t.banks, 1, 256);
        c.range_u64(&format!("{tk}.row_bytes"), t.row_bytes, 64, 65_536);
        c.power_of_two(&format!("{tk}.row_bytes"), t.row_bytes);
        for (name, val) in [
            ("t_rcd_ns", t.t_rcd_ns),
            ("t_cl_ns", t.t_cl_ns),
            ("t_rp_ns", t.t_rp_ns),
            ("t_ras_ns", t.t_ras_ns),
            ("t_rfc_ns", t.t_rfc_ns),
        ] {
            finite_positive(&mut c, &format!("{tk}.{name}"), val, 10_000.0);
        }
        finite_positive(&mut c, &format!("{tk}.t_refi_ns"), t.t_refi_ns, 1e7);
        if t.t_ras_ns < t.t_rcd_ns {
            c.push(
                format!("{tk}.t_ras_ns"),
                format!(
                    "{} ns is shorter than t_rcd_ns {} ns",
                    t.t_ras_ns, t.t_rcd_ns
                ),
                "tRAS must be at least tRCD",
            );
        }
        if t.t_rfc_ns >= t.t_refi_ns {
            c.push(
                format!("{tk}.t_rfc_ns"),
                format!(
                    "{} ns is not shorter than t_refi_ns {} ns",
                    t.t_rfc_ns, t.t_refi_ns
                ),
                "tRFC must be shorter than tREFI",
            );
        }
        if ![2, 4, 8, 16, 32].contains(&t.burst_length) {
            c.push(
                format!("{tk}.burst_length"),
                format!("{} is not a burst length", t.burst_length),
                "allowed: 2, 4, 8, 16, 32",
            );
        }
    }
    for h in [Holds::Weights, Holds::Kv, Holds::Activations] {
        if !a.memories.is_empty() && !a.memories.iter().any(|m| m.holds(h)) {
            c.push(
                "memories",
                format!("no memory holds {}", h.name()),
                format!("add \"{}\" to some memory's `holds`", h.name()),
            );
        }
    }

    c.range_u64("dma.engines", a.dma.engines, 1, 256);
    c.range_u64("dma.bytes_per_cycle", a.dma.bytes_per_cycle, 1, 4096);
    c.range_u64("dma.max_outstanding", a.dma.max_outstanding, 1, 4096);
    c.range_u64(
        "instruction_memory.bytes",
        a.instruction_memory.bytes,
        64,
        1 << 32,
    );
    c.range_u64(
        "instruction_memory.fetch_bytes_per_cycle",
        a.instruction_memory.fetch_bytes_per_cycle,
        1,
        1024,
    );

    let e = &a.energy;
    let mut mac_pairs = BTreeSet::new();
    for (i, me) in e.mac.iter().enumerate() {
        finite_nonneg(&mut c, &format!("energy.mac[{i}].pj"), me.pj);
        source(&mut c, &format!("energy.mac[{i}].source"), &me.source);
        if !mac_pairs.insert((me.weight, me.activation)) {
            c.push(
                format!("energy.mac[{i}]"),
                format!(
                    "{}×{} is listed twice",
                    me.weight.name(),
                    activation_name(me.activation)
                ),
                "list each weight × activation pair once",
            );
        }
    }
    for p in &m.precisions {
        if a.energy.mac(p.weight.bits(), p.activation).is_none() {
            c.push(
                "energy.mac",
                format!("no entry for {p}"),
                "add an energy.mac entry for every matrix precision",
            );
        }
    }
    let mut buffer_entries = BTreeSet::new();
    for (i, be) in e.buffer.iter().enumerate() {
        if !buffer_entries.insert(be.name.as_str()) {
            c.push(
                format!("energy.buffer[{i}].name"),
                format!("`{}` is listed twice", be.name),
                "list each buffer once",
            );
        }
        finite_nonneg(
            &mut c,
            &format!("energy.buffer[{i}].pj_per_access"),
            be.pj_per_access,
        );
        source(&mut c, &format!("energy.buffer[{i}].source"), &be.source);
        if !a.buffers.iter().any(|b| b.name == be.name) {
            c.push(
                format!("energy.buffer[{i}].name"),
                format!("no buffer is called `{}`", be.name),
                format!(
                    "buffers: {}",
                    names.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    for b in &a.buffers {
        if e.buffer_access(&b.name).is_none() {
            c.push(
                "energy.buffer",
                format!("no entry for buffer `{}`", b.name),
                "add an energy.buffer entry for every buffer",
            );
        }
    }
    let mut memory_kinds = BTreeSet::new();
    for (i, me) in e.memory.iter().enumerate() {
        if !memory_kinds.insert(me.kind) {
            c.push(
                format!("energy.memory[{i}].kind"),
                format!("{} is listed twice", me.kind.name()),
                "list each memory kind once",
            );
        }
        finite_nonneg(
            &mut c,
            &format!("energy.memory[{i}].pj_per_bit"),
            me.pj_per_bit,
        );
        source(&mut c, &format!("energy.memory[{i}].source"), &me.source);
    }
    for mem in &a.memories {
        if e.memory_pj_per_bit(mem.kind).is_none() {
            c.push(
                "energy.memory",
                format!("no entry for memory kind {}", mem.kind.name()),
                "add an energy.memory entry for every memory kind used",
            );
        }
    }
    finite_nonneg(
        &mut c,
        "energy.vector.pj_per_element_op",
        e.vector.pj_per_element_op,
    );
    source(&mut c, "energy.vector.source", &e.vector.source);
    finite_nonneg(&mut c, "energy.static_power.watts", e.static_power.watts);
    source(&mut c, "energy.static_power.source", &e.static_power.source);

    match (a.kind, &a.resources.fpga, &a.resources.asic) {
        (TargetKind::Fpga, Some(f), None) => {
            source(&mut c, "resources.fpga.source", &f.source);
            let dsps = crate::resource_model::engine_dsps(m);
            if dsps > f.dsp {
                let how = if crate::resource_model::Calibration::builtin()
                    .estimate(m)
                    .is_some()
                {
                    "as measured for the generated engine (spec/data/resources-yosys-xcup.json)"
                        .to_string()
                } else {
                    format!(
                        "rows × cols × chain = {} × {} × {}",
                        m.rows, m.cols, m.chain
                    )
                };
                c.push(
                    "matrix.rows",
                    format!(
                        "the matrix engine needs {dsps} DSPs ({how}), but the board has {} (resources.fpga.dsp)",
                        f.dsp
                    ),
                    "shrink matrix.rows, matrix.cols or matrix.chain",
                );
            }
        }
        (TargetKind::Asic, None, Some(asic)) => {
            c.range_u64("resources.asic.node_nm", asic.node_nm, 1, 250);
            for (i, ae) in asic.area.iter().enumerate() {
                finite_positive(
                    &mut c,
                    &format!("resources.asic.area[{i}].mm2"),
                    ae.mm2,
                    10_000.0,
                );
                source(
                    &mut c,
                    &format!("resources.asic.area[{i}].source"),
                    &ae.source,
                );
            }
        }
        (kind, _, _) => c.push(
            "resources",
            format!("a {} target needs exactly one resources table", kind.name()),
            "fpga targets use [resources.fpga], asic targets [resources.asic]",
        ),
    }
    c.finish(file)
}

fn finite_nonneg(c: &mut Checker, key: &str, v: f64) {
    if !v.is_finite() || v < 0.0 {
        c.push(
            key,
            format!("{v} is out of range"),
            "allowed: a finite number >= 0",
        );
    }
}
