//! Functional mode: the data an instruction stream computes, in the operand formats of
//! [`tessera_spec::isa::data`]. [`DataState`] holds every DRAM channel's and buffer's bytes; the
//! engine applies each instruction to it when the instruction starts (its tokens guarantee that
//! its inputs are complete by then), so timing and data come from one run.

use std::collections::BTreeMap;
use tessera_spec::accel::{Accelerator, SfuOp};
use tessera_spec::analytical::{
    matrix_operand_bytes, matrix_product_bytes, result_batch_stride, result_extent,
    result_row_stride, sfu_operand_bytes, sfu_operand_extents,
};
use tessera_spec::isa::data::{
    f16_bytes, f16_values, f32_values, groups_per_column, quantize_scale, sfu_row, unpack_ints,
    weight_scales_offset,
};
use tessera_spec::isa::{
    BufRef, Dma, Instruction, MatrixOp, OutCode, SfuInstr, SparseCode, WeightCode,
};

const PAGE: u64 = 1 << 16;

/// The bytes of every DRAM channel (sparse; never-written bytes read as zero) and on-chip buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataState {
    dram: Vec<BTreeMap<u64, Vec<u8>>>,
    buffers: Vec<Vec<u8>>,
}

impl DataState {
    /// All-zero memories for `accel` (channels numbered as in DMA instructions).
    pub fn new(accel: &Accelerator) -> Self {
        let channels = accel.memories().iter().map(|m| m.channels()).sum::<u64>();
        DataState {
            dram: vec![BTreeMap::new(); channels as usize],
            buffers: accel
                .buffers()
                .iter()
                .map(|b| vec![0; b.bytes().0 as usize])
                .collect(),
        }
    }

    /// Writes `bytes` to DRAM `channel` at `addr`.
    pub fn write_dram(&mut self, channel: u8, addr: u64, bytes: &[u8]) {
        let pages = &mut self.dram[channel as usize];
        for (i, b) in bytes.iter().enumerate() {
            let a = addr + i as u64;
            pages
                .entry(a / PAGE)
                .or_insert_with(|| vec![0; PAGE as usize])[(a % PAGE) as usize] = *b;
        }
    }

    /// Reads `len` bytes of DRAM `channel` at `addr`.
    pub fn read_dram(&self, channel: u8, addr: u64, len: u64) -> Vec<u8> {
        let pages = &self.dram[channel as usize];
        (addr..addr + len)
            .map(|a| pages.get(&(a / PAGE)).map_or(0, |p| p[(a % PAGE) as usize]))
            .collect()
    }

    /// The bytes of buffer `index`.
    pub fn buffer(&self, index: u8) -> &[u8] {
        &self.buffers[index as usize]
    }

    /// Writes `bytes` to buffer `index` at `addr` (data already on chip when a program starts).
    /// Panics past the buffer's end.
    pub fn write_buffer(&mut self, index: u8, addr: u64, bytes: &[u8]) {
        self.buf_mut(index, addr as u32, bytes.len() as u64)
            .copy_from_slice(bytes);
    }

    fn buf(&self, buffer: u8, addr: u32, len: u64) -> &[u8] {
        &self.buffers[buffer as usize][addr as usize..addr as usize + len as usize]
    }

    fn buf_mut(&mut self, buffer: u8, addr: u32, len: u64) -> &mut [u8] {
        &mut self.buffers[buffer as usize][addr as usize..addr as usize + len as usize]
    }

    /// Applies `ins`. Errors say what the functional model does not support.
    pub(crate) fn execute(&mut self, ins: &Instruction) -> Result<(), String> {
        match ins {
            Instruction::Load(d) | Instruction::Store(d) => {
                let load = matches!(ins, Instruction::Load(_));
                for lane in d.lanes() {
                    self.dma(&lane, load);
                }
                Ok(())
            }
            Instruction::Matmul(m) | Instruction::Matvec(m) => {
                // A batch is its products one after another, each `c_batch` result elements
                // after the previous.
                let one = matrix_product_bytes(m);
                let rows = result_batch_stride(m) * m.out.bytes();
                for h in 0..m.products() {
                    let at = |r: BufRef, bytes: u64| BufRef {
                        buffer: r.buffer,
                        addr: r.addr + (h * bytes) as u32,
                    };
                    self.matrix(&MatrixOp {
                        a: at(m.a, one.a),
                        b: at(m.b, one.b),
                        meta: at(m.meta, one.meta),
                        c: at(m.c, rows),
                        batch: 0,
                        c_batch: 0,
                        ..*m
                    })?;
                }
                Ok(())
            }
            Instruction::Sfu(s) => {
                self.sfu(s);
                Ok(())
            }
            Instruction::Sys(_) => Ok(()),
        }
    }

    /// Moves one lane's bytes (`d` has one lane).
    fn dma(&mut self, d: &Dma, load: bool) {
        let n = |l: usize| d.loops[l].count.max(1) as u64;
        for i2 in 0..n(2) {
            for i1 in 0..n(1) {
                for i0 in 0..n(0) {
                    let i = [i0, i1, i2];
                    let dram = d.dram_addr
                        + (0..3)
                            .map(|l| i[l] * d.loops[l].dram_stride as u64)
                            .sum::<u64>();
                    let buf = d.buf.addr as u64
                        + (0..3)
                            .map(|l| i[l] * d.loops[l].buf_stride as u64)
                            .sum::<u64>();
                    let len = d.bytes as u64;
                    if load {
                        let bytes = self.read_dram(d.channel, dram, len);
                        self.buf_mut(d.buf.buffer, buf as u32, len)
                            .copy_from_slice(&bytes);
                    } else {
                        let bytes = self.buf(d.buf.buffer, buf as u32, len).to_vec();
                        self.write_dram(d.channel, dram, &bytes);
                    }
                }
            }
        }
    }

    fn matrix(&mut self, m: &MatrixOp) -> Result<(), String> {
        let (rows, n, k) = (m.m as u64, m.n as u64, m.k as u64);
        let group = m.group as u64;
        let nm = m.sparse == SparseCode::Nm;
        if matches!(m.sparse, SparseCode::Block | SparseCode::Unstructured) {
            return Err(format!(
                "{:?} sparsity (block skipping, decompression on load) has no data semantics",
                m.sparse
            ));
        }
        if nm && (k % 16 != 0 || (group != 0 && group % 16 != 0)) {
            return Err(format!(
                "N:M sparsity needs k ({k}) and the group ({group}) to be multiples of 16"
            ));
        }
        if m.weight == WeightCode::Fp16 && m.act_int8 {
            return Err("fp16 weights need fp16 activations (act_int8=0)".into());
        }
        let kept = if nm { k / 16 * m.nm_n as u64 } else { k };
        // Activations, as integers (int8) or fp32 (fp16).
        // Operand extents come from the one place that sizes them (timing uses it too).
        let bytes = matrix_operand_bytes(m);
        let a_raw = self.buf(m.a.buffer, m.a.addr, bytes.a);
        let (a_raw, row_scales) = if m.a_scaled {
            let (values, scales) = a_raw.split_at((rows * k) as usize);
            (values, Some(f16_values(scales)))
        } else {
            (a_raw, None)
        };
        let act_int: Vec<i32> = a_raw.iter().map(|b| *b as i8 as i32).collect();
        let act_f32 = f16_values(a_raw);
        // Weights (and scales), one column at a time.
        let bits = m.weight.bits();
        let scales_at = weight_scales_offset(kept * n, bits);
        let groups = groups_per_column(k, group);
        let b_raw = self.buf(m.b.buffer, m.b.addr, bytes.b).to_vec();
        let meta = if nm {
            self.buf(m.meta.buffer, m.meta.addr, bytes.meta).to_vec()
        } else {
            Vec::new()
        };
        let mut out = vec![0f32; (rows * n) as usize];
        for j in 0..n {
            // (reduction index, weight) in storage order.
            let positions: Vec<u64> = if nm {
                let idx = unpack_ints(&meta, j * kept, kept, 4, false);
                (0..kept)
                    .map(|e| e / m.nm_n as u64 * 16 + idx[e as usize] as u64)
                    .collect()
            } else {
                (0..k).collect()
            };
            if m.weight == WeightCode::Fp16 {
                let w = if m.b_rows {
                    let all = f16_values(&b_raw[..(2 * k * n) as usize]);
                    (0..k).map(|p| all[(p * n + j) as usize]).collect()
                } else {
                    f16_values(&b_raw[(2 * j * kept) as usize..(2 * (j + 1) * kept) as usize])
                };
                for r in 0..rows {
                    let mut acc = 0f32;
                    for (e, &p) in positions.iter().enumerate() {
                        acc += act_f32[(r * k + p) as usize] * w[e];
                    }
                    out[(r * n + j) as usize] = acc;
                }
                continue;
            }
            if m.b_rows {
                // Int8 rows without scales: the plain dot product (`isa::data`).
                let w: Vec<i32> = (0..k)
                    .map(|p| b_raw[(p * n + j) as usize] as i8 as i32)
                    .collect();
                for r in 0..rows {
                    let row = (r * k) as usize..((r + 1) * k) as usize;
                    out[(r * n + j) as usize] = if m.act_int8 {
                        let a = &act_int[row];
                        a.iter().zip(&w).map(|(a, w)| a * w).sum::<i32>() as f32
                    } else {
                        let a = &act_f32[row];
                        a.iter()
                            .zip(&w)
                            .fold(0f32, |acc, (a, w)| acc + a * *w as f32)
                    };
                }
                continue;
            }
            let w = unpack_ints(&b_raw, j * kept, kept, bits, true);
            let scale_at = (scales_at + 2 * j * groups) as usize;
            let scales = f16_values(&b_raw[scale_at..scale_at + 2 * groups as usize]);
            // Zero points follow every column's scales, in the same order.
            let zero_points = m.zero_points.then(|| {
                let at = scale_at + (2 * n * groups) as usize;
                f16_values(&b_raw[at..at + 2 * groups as usize])
            });
            let group_of = |p: u64| p.checked_div(group).unwrap_or(0);
            for r in 0..rows {
                let mut acc = 0f32;
                let mut current = 0;
                // (dot product, activation sum) of the group so far, int32 and fp32.
                let mut sums = GroupSums::default();
                let add = |acc: &mut f32, g: u64, sums: &GroupSums| {
                    let (dot, asum) = sums.of(m.act_int8);
                    *acc += scales[g as usize]
                        * match &zero_points {
                            Some(z) => dot - z[g as usize] * asum,
                            None => dot,
                        };
                };
                for (e, &p) in positions.iter().enumerate() {
                    let g = group_of(p);
                    if g != current {
                        add(&mut acc, current, &sums);
                        sums = GroupSums::default();
                        current = g;
                    }
                    let a = (r * k + p) as usize;
                    match m.act_int8 {
                        true => sums.add_int(act_int[a], w[e]),
                        false => sums.add_f32(act_f32[a], w[e]),
                    }
                }
                if !positions.is_empty() {
                    add(&mut acc, current, &sums);
                }
                out[(r * n + j) as usize] = acc;
            }
        }
        if let Some(scales) = row_scales {
            for (row, s) in out.chunks_exact_mut(n as usize).zip(scales) {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        // The epilogue: each operation on the results in the `out` format, rounded to it.
        let bias = m
            .bias
            .map(|b| f16_values(self.buf(b.buffer, b.addr, 2 * n)));
        let round = |row: &mut [f32]| {
            if m.out == OutCode::Fp16 {
                let rounded = f16_values(&f16_bytes(row));
                row.copy_from_slice(&rounded);
            }
        };
        for op in m.epilogue() {
            for row in out.chunks_exact_mut(n as usize) {
                round(row);
                let aux = bias.as_deref().unwrap_or_default();
                row.copy_from_slice(&sfu_row(op, row, aux));
            }
        }
        // Row `r` of the results starts `r · c_stride` elements after `c`.
        let elem = m.out.bytes() as usize;
        let stride = result_row_stride(m) as usize * elem;
        let c = self.buf_mut(m.c.buffer, m.c.addr, result_extent(m));
        for (r, row) in out.chunks_exact_mut(n as usize).enumerate() {
            let dst = &mut c[r * stride..r * stride + row.len() * elem];
            if m.accumulate {
                let old = match m.out {
                    OutCode::Fp32 => f32_values(dst),
                    OutCode::Fp16 => f16_values(dst),
                };
                for (o, prev) in row.iter_mut().zip(old) {
                    *o += prev;
                }
            }
            match m.out {
                OutCode::Fp32 => {
                    for (chunk, v) in dst.chunks_exact_mut(4).zip(row.iter()) {
                        chunk.copy_from_slice(&v.to_le_bytes());
                    }
                }
                OutCode::Fp16 => dst.copy_from_slice(&f16_bytes(row)),
            }
        }
        Ok(())
    }

    fn sfu(&mut self, s: &SfuInstr) {
        let (rows, cols) = (s.rows as usize, s.cols as usize);
        let (src_len, aux_len, _) = sfu_operand_bytes(s);
        let (src_span, aux_span, _) = sfu_operand_extents(s);
        // Row `r` of a strided operand starts `r · stride` elements on.
        let stride = |stride: u16| match stride {
            0 => cols,
            s => s as usize,
        };
        let packed = |raw: &[u8], len: u64, span: u64, step: u16| -> Vec<f32> {
            let values = f16_values(raw);
            if len == span {
                return values;
            }
            let step = stride(step);
            (0..rows)
                .flat_map(|r| values[r * step..r * step + cols].iter().copied())
                .collect()
        };
        let src_raw = self.buf(s.src.buffer, s.src.addr, src_span);
        // `dequantize` reads int8 values then one fp16 scale per row; the others read fp16.
        let (src, row_scales) = if s.op == SfuOp::Dequantize {
            let (values, scales) = src_raw.split_at(rows * cols);
            let values = values.iter().map(|b| *b as i8 as f32).collect();
            (values, f16_values(scales))
        } else {
            (packed(src_raw, src_len, src_span, s.src_stride), Vec::new())
        };
        let aux_raw = self.buf(s.aux.buffer, s.aux.addr, aux_span);
        let aux = packed(aux_raw, aux_len, aux_span, s.aux_stride);
        // Same-shape operands, and rotary angles with a row stride: one row per row.
        let per_row =
            matches!(s.op, SfuOp::Add | SfuOp::Mul) || (s.op == SfuOp::Rotary && s.aux_stride != 0);
        let mut out = Vec::with_capacity(rows * cols);
        let mut scales = Vec::new();
        for r in 0..rows {
            let x = &src[r * cols..(r + 1) * cols];
            let a = match s.op {
                _ if per_row => &aux[r * cols..(r + 1) * cols],
                SfuOp::Dequantize => &row_scales[r..r + 1],
                _ => &aux[..],
            };
            // A causal softmax takes the row's first `causal + r mod causal_period` elements;
            // the rest are 0.
            let seen = match (s.causal, s.causal_period) {
                (0, _) => cols,
                (c, 0) => (c as usize + r).min(cols),
                (c, p) => (c as usize + r % p as usize).min(cols),
            };
            out.extend(sfu_row(s.op, &x[..seen], a));
            out.extend(std::iter::repeat_n(0.0, cols - seen));
            if s.op == SfuOp::Quantize {
                scales.push(quantize_scale(x).to_f32());
            }
        }
        if s.op == SfuOp::Quantize {
            // int8 values (exact integers in fp32), then the row scales.
            let mut b: Vec<u8> = out.iter().map(|v| *v as i8 as u8).collect();
            b.extend(f16_bytes(&scales));
            self.buf_mut(s.dst.buffer, s.dst.addr, b.len() as u64)
                .copy_from_slice(&b);
            return;
        }
        let step = 2 * stride(s.dst_stride) as u32;
        for (r, row) in out.chunks(cols.max(1)).enumerate() {
            let at = s.dst.addr + r as u32 * step;
            self.buf_mut(s.dst.buffer, at, 2 * cols as u64)
                .copy_from_slice(&f16_bytes(row));
        }
    }
}

/// A group's partial sum as fp32.
/// One quantisation group's partial sums of a result: the dot product and the activations' sum,
/// in int32 (int8 activations) and fp32 in reduction order (fp16 activations).
#[derive(Debug, Default)]
struct GroupSums {
    dot_int: i32,
    asum_int: i32,
    dot_f32: f32,
    asum_f32: f32,
}

impl GroupSums {
    /// Adds int8 activation `a` times weight `w`.
    fn add_int(&mut self, a: i32, w: i32) {
        self.dot_int += a * w;
        self.asum_int += a;
    }

    /// Adds fp16 activation `a` (as fp32) times weight `w`.
    fn add_f32(&mut self, a: f32, w: i32) {
        self.dot_f32 += a * w as f32;
        self.asum_f32 += a;
    }

    /// `(dot product, activation sum)` as fp32, of the activations' format.
    fn of(&self, int8: bool) -> (f32, f32) {
        match int8 {
            true => (self.dot_int as f32, self.asum_int as f32),
            false => (self.dot_f32, self.asum_f32),
        }
    }
}
