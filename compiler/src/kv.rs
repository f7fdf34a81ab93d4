//! The KV cache in its memory, and the decode attention that streams it.
//!
//! **Layout** ([`KvLayout`]), the same for every program of a run (it depends on the model, the
//! compression, the batch and the cache's capacity in tokens, not on the pass):
//! - Each KV head has `G = max(1, C / kv_heads)` of the KV memory's `C` channels (heads share
//!   channels when there are more heads than channels), so one layer's heads stream from every
//!   channel at once.
//! - Keys are token-major rows (`head_dim` fp16, or the integer format's values) in blocks of as
//!   many keys as fill one DRAM row, an integer block's row scales (fp16, one per key) after its
//!   rows; block `i` of a head lives in its channel `i mod G`, so any range of keys streams from
//!   all `G`, values and scales landing where a matrix instruction reads an integer weight
//!   operand's columns and their scales (`isa::data`).
//! - Values are token-major too, cut by columns into `P` parts of at least 16 dimensions, part `j`
//!   in the head's channel `j mod G_v` (`G_v ≤ G` channels, so every part keeps 16 or more
//!   dimensions); each part is a `tokens × dims` array of its own, so reading a part streams
//!   whole rows. Integer formats keep whole rows, one part, all of a head's rows then their row
//!   scales: a run of positions loads as int8 `b_rows` weights and, apart, the scales the
//!   probabilities are multiplied by.
//! - The cache fills the top of every channel, below the capacity; weights and other data grow
//!   from address 0.
//!
//! **Decode attention** at context `c` attends to each head's visible keys among positions
//! `0..=c` (all of them, the sliding window, or a streaming head's sink and recent window), read
//! back from the cache after the step's KV append stored position `c`:
//! - scores `q · Kᵀ`: waves of up to `W` keys of every head (whole rounds of blocks over its
//!   channels), double-buffered in the KV buffer's halves; per wave one matrix instruction per
//!   head (its query heads' rows against its keys), each writing its columns of the head's
//!   `rows × keys` scores (`c_stride`);
//! - values `p · V`: waves of `G_v` value parts (adjacent dimensions) of every head, each head's
//!   rows loaded side by side into a `keys × dims` operand (`b_rows`); per wave one matrix
//!   instruction per head over all its keys (no partial sums), writing its dimensions of the
//!   context rows (`c_stride = head_dim`).
//!
//! A batch's sequences each attend to their own cache region with their own query rows, their
//! waves one after another as one stream through the KV buffer's halves
//! ([`KvLayout::attention_batch`]).
//!
//! **Integer caches** hold each key and value row quantised by the special-function unit's
//! `quantize` (int8 values and one fp16 scale per row) before the KV append stores them. Scores
//! are the matrix engine's integer-weight product, a key's scale being its output column's scale
//! (queries quantised per row first when activations are int8). A value's scale `s_t` lies along
//! the reduction of `p · V`, which per-column scales cannot express, so it is folded into the
//! probabilities: `Σ_t p_t · (s_t · v_t) = Σ_t (p_t · s_t) · v_t`. Per wave, the special-function
//! unit multiplies each query row's probabilities by the head's value scales (`mul`, loaded
//! beside the rows in the KV buffer) and, for int8 activations, quantises them per row
//! (`quantize`); the product then reads the int8 value rows as they were loaded (int8 `b_rows`
//! weights, which carry no scales), so it needs 8-bit weights × the activations in
//! `matrix.precisions`. The special-function unit writes int8 rows only, so an int4 cache is a
//! timing model (its stores and its values product sized as int8's).
//!
//! The KV append of a decode step stores at its context's position; a program compiled for a
//! length bucket stores at the bucket's, so only exact-length programs place the step's key and
//! value where the next step reads them.

use crate::lower::{join_lanes, memory_channels, product_unit, LowerError, DRAM_ALIGN, MIN_WAVES};
use crate::program::MIB;
use std::ops::Range;
use tessera_spec::accel::{Accelerator, Holds, SfuOp};
use tessera_spec::analytical::{matrix_product_bytes, result_batch_stride, result_row_stride};
use tessera_spec::compression::{ActivationFormat, Compression, KvFormat};
use tessera_spec::isa::{
    BufRef, Dma, Instruction, Loop, MatrixOp, OutCode, SfuInstr, SparseCode, Sync, SysInstr, SysOp,
    Unit, UnitMask, WeightCode,
};
use tessera_spec::model::ModelConfig;

/// Fewest dimensions of a value part: 16 fp16 values, 32 bytes, a burst of the presets' memories.
const MIN_PART_DIMS: u64 = 16;

/// Where every key and value of the cache lives (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvLayout {
    /// Global index of the KV memory's first channel.
    first: u64,
    /// Channels of the KV memory.
    channels: u64,
    /// Sequences.
    batch: u64,
    /// Layers.
    layers: u64,
    /// KV heads per layer.
    kv_heads: u64,
    /// Dimensions per head.
    head_dim: u64,
    /// Tokens each sequence's cache holds.
    tokens: u64,
    /// Bytes of one key row's values.
    key_row: u64,
    /// Bytes of one row's scale (0 for fp16, else one fp16 scale).
    row_scale: u64,
    /// Keys per block.
    block: u64,
    /// Channels per head (`G`).
    group: u64,
    /// Channels a head's value parts spread over (`G_v`).
    value_channels: u64,
    /// Value parts (`P`, a multiple of `G_v`).
    parts: u64,
    /// Bytes of one token's row of one value part.
    part_row: u64,
    /// Heads sharing one channel.
    slots: u64,
    /// Address of the cache in every channel.
    base: u64,
    /// fp16 cache (else integer rows with row scales).
    fp16: bool,
    /// Lanes one DMA instruction may run on (`dma.engines`).
    dma_lanes: u64,
}

impl KvLayout {
    /// The cache of `batch` sequences of `tokens` tokens for `model` under `comp` on `accel`;
    /// fails (naming `op` and the key) when the accelerator has no KV memory or the cache does not
    /// fit it.
    pub fn new(
        accel: &Accelerator,
        comp: &Compression,
        model: &ModelConfig,
        batch: u64,
        tokens: u64,
        op: &str,
    ) -> Result<KvLayout, LowerError> {
        let err = |reason: String, key: String| LowerError {
            op: op.to_string(),
            reason,
            key,
        };
        let (first, channels) = memory_channels(accel, Holds::Kv, op)?;
        let index = accel
            .memories()
            .iter()
            .position(|m| m.holds(Holds::Kv))
            .expect("a memory holds the KV cache");
        let memory = &accel.memories()[index];
        let channels = channels.max(1);
        let kv_heads = (model.kv_heads as u64).max(1);
        let head_dim = model.head_dim.max(1);
        let fp16 = comp.kv.format == KvFormat::Fp16;
        // Rows as the graph counts them: the values and, for integer formats, a scale.
        let row_scale = comp.kv.format.row_scale_bytes();
        let key_row = comp.kv.format.row_bytes(head_dim) - row_scale;
        let block = (memory.timing().row_bytes / (key_row + row_scale)).max(1);
        let group = (channels / kv_heads).max(1);
        let slots = (kv_heads * group).div_ceil(channels);
        let value_channels = if fp16 {
            widest_split(head_dim, group)
        } else {
            1
        };
        let waves = if fp16 {
            widest_split(head_dim / value_channels, MIN_WAVES)
        } else {
            1
        };
        let parts = value_channels * waves;
        let part_row = if fp16 { head_dim / parts * 2 } else { key_row };
        let mut layout = KvLayout {
            first,
            channels,
            batch: batch.max(1),
            layers: (model.layers as u64).max(1),
            kv_heads,
            head_dim,
            tokens: tokens.max(1),
            key_row,
            row_scale,
            block,
            group,
            value_channels,
            parts,
            part_row,
            slots,
            base: 0,
            fp16,
            dma_lanes: accel.dma().engines().min(u8::MAX as u64),
        };
        let per_channel = memory.capacity().0 / channels;
        let area = layout.area_per_channel();
        if area > per_channel {
            return Err(err(
                format!(
                    "the KV cache of {} × {} tokens takes {:.1} MiB of each channel of memory `{}`, \
                     whose channels hold {:.1} MiB",
                    layout.batch,
                    layout.tokens,
                    area as f64 / MIB,
                    memory.name(),
                    per_channel as f64 / MIB
                ),
                format!("memories[{index}].capacity_gib"),
            ));
        }
        layout.base = (per_channel - area) / DRAM_ALIGN * DRAM_ALIGN;
        Ok(layout)
    }

    /// Bytes of one key block: its rows, then their scales.
    fn block_bytes(&self) -> u64 {
        self.block * (self.key_row + self.row_scale)
    }

    /// Bytes of one sequence-layer-slot region's keys in one channel.
    fn key_area(&self) -> u64 {
        self.tokens.div_ceil(self.block).div_ceil(self.group) * self.block_bytes()
    }

    /// Bytes of one sequence-layer-slot region's value parts in one channel (an integer cache's
    /// row scales after its rows).
    fn value_area(&self) -> u64 {
        self.parts / self.value_channels * self.tokens * self.part_row
            + self.tokens * self.row_scale
    }

    /// Bytes of the cache in each channel.
    pub fn area_per_channel(&self) -> u64 {
        self.batch * self.layers * self.slots * (self.key_area() + self.value_area())
    }

    /// Where the cache starts in every channel: data below it is free for the rest.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Global channel of the `i`-th channel of `head`, and the head's slot in its channels.
    fn channel(&self, head: u64, i: u64) -> (u64, u64) {
        let g = head * self.group;
        (self.first + (g + i) % self.channels, g / self.channels)
    }

    fn region(&self, seq: u64, layer: u64, slot: u64) -> u64 {
        self.base
            + ((seq * self.layers + layer) * self.slots + slot)
                * (self.key_area() + self.value_area())
    }

    /// Channel and address of key `pos` of `head` (layer `layer`, sequence `seq`).
    pub fn key(&self, seq: u64, layer: u64, head: u64, pos: u64) -> (u8, u64) {
        let (ch, block_at) = self.key_block(seq, layer, head, pos);
        (ch, block_at + pos % self.block * self.key_row)
    }

    /// Channel and address of the fp16 scale of key `pos` of `head` in an integer cache (`None`
    /// for fp16).
    pub fn key_scale(&self, seq: u64, layer: u64, head: u64, pos: u64) -> Option<(u8, u64)> {
        let (ch, block_at) = self.key_block(seq, layer, head, pos);
        let scales = block_at + self.block * self.key_row;
        (!self.fp16).then_some((ch, scales + pos % self.block * self.row_scale))
    }

    /// Channel and address of the block holding key `pos` of `head`.
    fn key_block(&self, seq: u64, layer: u64, head: u64, pos: u64) -> (u8, u64) {
        let block = pos / self.block;
        let (ch, slot) = self.channel(head, block % self.group);
        let index = block / self.group;
        (
            ch as u8,
            self.region(seq, layer, slot) + index * self.block_bytes(),
        )
    }

    /// Channel and address of `pos`'s row of value part `part` of `head`.
    pub fn value(&self, seq: u64, layer: u64, head: u64, part: u64, pos: u64) -> (u8, u64) {
        let (ch, slot) = self.channel(head, part % self.value_channels);
        let at = (part / self.value_channels * self.tokens + pos) * self.part_row;
        (
            ch as u8,
            self.region(seq, layer, slot) + self.key_area() + at,
        )
    }

    /// Channel and address of the fp16 scale of `pos`'s value row of `head` in an integer cache
    /// (one part; `None` for fp16).
    pub fn value_scale(&self, seq: u64, layer: u64, head: u64, pos: u64) -> Option<(u8, u64)> {
        let (ch, slot) = self.channel(head, 0);
        let scales = self.region(seq, layer, slot) + self.key_area() + self.tokens * self.part_row;
        (!self.fp16).then_some((ch as u8, scales + pos * self.row_scale))
    }

    /// Value parts.
    pub fn parts(&self) -> u64 {
        self.parts
    }

    /// Bytes of one key row's values (its scale apart).
    pub fn key_row(&self) -> u64 {
        self.key_row
    }

    /// Dimensions of one value part.
    pub fn part_dims(&self) -> u64 {
        if self.fp16 {
            self.head_dim / self.parts
        } else {
            self.head_dim
        }
    }

    /// Bytes of one token's row of a value part.
    pub fn part_row(&self) -> u64 {
        self.part_row
    }

    /// Bytes of the KV buffer one head's integer values over `keys` keys take with `rows` query
    /// rows: the int8 rows (an int4 cache's timing model takes the same room), their fp16 scales,
    /// the folded probabilities (fp16) and, for int8 activations, those quantised.
    fn folded_bytes(&self, keys: u64, rows: u64, act_int8: bool) -> u64 {
        let quantized = if act_int8 { rows * (keys + 2) } else { 0 };
        keys * (self.head_dim + self.row_scale) + 2 * rows * keys + quantized
    }
}

/// The most parts, up to `most`, that `dims` dimensions divide into evenly with at least
/// [`MIN_PART_DIMS`] each (1 when none does).
fn widest_split(dims: u64, most: u64) -> u64 {
    (1..=most.max(1))
        .rev()
        .find(|p| dims % p == 0 && dims / p >= MIN_PART_DIMS)
        .unwrap_or(1)
}

/// One contiguous piece of a transfer: DRAM address, buffer address, bytes.
type Piece = (u64, u64, u64);

/// The DMA transfers moving `pieces` (in order) between `channel` and `buffer`: pieces
/// contiguous on both sides join into one chunk; equal chunks at a constant stride on both sides
/// become one transfer's loop.
fn coalesce(channel: u8, buffer: u8, pieces: &[Piece]) -> Vec<Dma> {
    const MAX_CHUNK: u64 = (1 << 24) - 1;
    let mut dmas: Vec<Dma> = Vec::new();
    let dma = |(dram, buf, bytes): Piece| Dma {
        sync: Sync::default(),
        buf: BufRef {
            buffer,
            addr: buf as u32,
        },
        channel,
        dram_addr: dram,
        bytes: bytes as u32,
        loops: [Loop::default(); 3],
        lanes: 1,
        lane_stride: 0,
    };
    for &(dram, buf, bytes) in pieces {
        if let Some(d) = dmas.last_mut() {
            let count = d.loops[0].count.max(1) as u64;
            let (chunk, d0, b0) = (d.bytes as u64, d.dram_addr, d.buf.addr as u64);
            if count == 1 && dram == d0 + chunk && buf == b0 + chunk && chunk + bytes <= MAX_CHUNK {
                d.bytes = (chunk + bytes) as u32;
                continue;
            }
            if bytes == chunk && count < u16::MAX as u64 && dram > d0 && buf > b0 {
                let (ds, bs) = (dram - d0, buf - b0);
                let fits = |s: u64| s <= u32::MAX as u64;
                let strided = count == 1 && fits(ds / count) && fits(bs);
                let next = count > 1
                    && dram == d0 + count * d.loops[0].dram_stride as u64
                    && buf == b0 + count * d.loops[0].buf_stride as u64;
                if strided || next {
                    if count == 1 {
                        d.loops[0].dram_stride = ds as u32;
                        d.loops[0].buf_stride = bs as u32;
                    }
                    d.loops[0].count = (count + 1) as u16;
                    continue;
                }
            }
        }
        dmas.push(dma((dram, buf, bytes)));
    }
    dmas
}

/// Groups `pieces` (channel, piece) by channel in first-seen order and coalesces each group;
/// consecutive channels whose transfers differ only in their buffer addresses, by one stride,
/// then run as the lanes of one multi-channel transfer ([`join_lanes`]).
fn by_channel(
    load: bool,
    buffer: u8,
    pieces: Vec<(u8, Piece)>,
    most_lanes: u64,
) -> Vec<Instruction> {
    // Each channel's pieces in order, channels in order of their first piece.
    let mut order: Vec<u8> = Vec::new();
    let mut mine: Vec<Vec<Piece>> = vec![Vec::new(); u8::MAX as usize + 1];
    for (ch, p) in pieces {
        let list = &mut mine[ch as usize];
        if list.is_empty() {
            order.push(ch);
        }
        list.push(p);
    }
    let per_channel: Vec<Vec<Dma>> = order
        .into_iter()
        .map(|ch| coalesce(ch, buffer, &mine[ch as usize]))
        .collect();
    join_lanes(per_channel, most_lanes)
        .into_iter()
        .map(|d| {
            if load {
                Instruction::Load(d)
            } else {
                Instruction::Store(d)
            }
        })
        .collect()
}

/// The keys `from..to` (indices into the concatenation of `runs`) as runs: (index of the first,
/// first position, length).
fn runs_between(runs: &[Range<u64>], from: u64, to: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut t = 0;
    for r in runs {
        let len = r.end - r.start;
        let (lo, hi) = (from.max(t), to.min(t + len));
        if lo < hi {
            out.push((lo, r.start + (lo - t), hi - lo));
        }
        t += len;
    }
    out
}

/// Where the rows of a KV append come from on chip: `buffer`, the first token's first head at
/// `addr`, consecutive tokens `token_stride` bytes apart and heads `head_stride` bytes apart; for
/// an integer cache the rows `quantize` wrote, whose scales follow them.
#[derive(Debug, Clone, Copy)]
pub struct Rows {
    /// Buffer.
    pub buffer: u8,
    /// First token's first head.
    pub addr: u64,
    /// Bytes from one token's rows to the next's.
    pub token_stride: u64,
    /// Bytes from one head's row to the next's.
    pub head_stride: u64,
    /// Integer rows: where their fp16 scales are.
    pub scales: Option<RowScales>,
}

/// Where the fp16 scales of integer KV rows ([`Rows`]) are: token `t`'s head `h`'s at
/// `addr + t · token_stride + h · head_stride` bytes.
#[derive(Debug, Clone, Copy)]
pub struct RowScales {
    /// The first token's first head's scale.
    pub addr: u64,
    /// Bytes from one token's scales to the next's.
    pub token_stride: u64,
    /// Bytes from one head's scale to the next's.
    pub head_stride: u64,
}

impl KvLayout {
    /// Stores of the keys (`values = false`) or values of tokens `positions` of sequence `seq`,
    /// layer `layer`, every head, from `src` (and, for an integer cache, their scales).
    pub fn append(
        &self,
        (seq, layer): (u64, u64),
        positions: Range<u64>,
        src: Rows,
        values: bool,
    ) -> Vec<Instruction> {
        let mut pieces = Vec::new();
        // Piece order lets a part's (or the keys') tokens join into one looped transfer.
        let parts = if values { self.parts } else { 1 };
        for h in 0..self.kv_heads {
            for part in 0..parts {
                for (t, pos) in positions.clone().enumerate() {
                    let row = src.addr + t as u64 * src.token_stride + h * src.head_stride;
                    pieces.push(if values {
                        let (ch, dram) = self.value(seq, layer, h, part, pos);
                        let at = row + part * self.part_row;
                        (ch, (dram, at, self.part_row))
                    } else {
                        let (ch, dram) = self.key(seq, layer, h, pos);
                        (ch, (dram, row, self.key_row))
                    });
                }
            }
            if let Some(scales) = src.scales {
                for (t, pos) in positions.clone().enumerate() {
                    let scale = if values {
                        self.value_scale(seq, layer, h, pos)
                    } else {
                        self.key_scale(seq, layer, h, pos)
                    };
                    let (ch, dram) = scale.expect("an integer cache stores row scales");
                    let at = scales.addr + t as u64 * scales.token_stride + h * scales.head_stride;
                    pieces.push((ch, (dram, at, self.row_scale)));
                }
            }
        }
        by_channel(false, src.buffer, pieces, self.dma_lanes)
    }
}

/// The visible key positions of every KV head of one query at context `context` (positions
/// `0..=context`): all of them, a sliding window, or for streaming heads (those after the first
/// `full`) the `sink` first and the most recent up to `sink + window`.
pub fn visible_keys(model: &ModelConfig, comp: &Compression, context: u64) -> Vec<Vec<Range<u64>>> {
    let end = context + 1;
    let window = model.sliding_window.unwrap_or(u64::MAX);
    let full = comp.kv.policy.full_heads(model.kv_heads) as u64;
    let (sink, recent) = (comp.kv.policy.sink, comp.kv.policy.window);
    (0..model.kv_heads as u64)
        .map(|h| {
            let runs = if h < full {
                [0..0, end.saturating_sub(window)..end]
            } else {
                let kept = end.min(sink + recent).min(window);
                let sink = sink.min(kept);
                [0..sink, end - (kept - sink)..end]
            };
            runs.into_iter().filter(|r| !r.is_empty()).collect()
        })
        .collect()
}

/// Visible keys of each KV head: the lengths of its runs of positions ([`visible_keys`]) summed.
pub fn key_counts(keys: &[Vec<Range<u64>>]) -> Vec<u64> {
    keys.iter()
        .map(|runs| runs.iter().map(|r| r.end - r.start).sum())
        .collect()
}

/// Where a decode attention product reads and writes on chip.
#[derive(Debug, Clone, Copy)]
pub struct AttentionOperands {
    /// Query rows (scores) or probabilities (values): head `h`'s rows start at `a.addr` plus
    /// the rows of the heads before it. Scores over an integer cache with int8 activations read
    /// the queries as `quantize` writes each head's rows (int8 values, then their scales).
    pub a: BufRef,
    /// Scores (`rows × keys` per head, heads one after another) or context rows (query head
    /// `r`'s `head_dim` values at `r · head_dim`).
    pub c: BufRef,
    /// The KV buffer, used in two halves.
    pub kv_buffer: u8,
    /// Values products: `None` writes each KV head's context rows together (query row `r` at
    /// `r · head_dim`); `Some(split)` splits a KV head's rows into its query heads' (each with
    /// as many rows) and writes query head `j`'s row `t` at `j · head_dim + t · split.c_row`
    /// elements, the token-major context rows of a prefill.
    pub split: Option<QuerySplit>,
}

/// How a values product's rows split by query head ([`AttentionOperands::split`]).
#[derive(Debug, Clone, Copy)]
pub struct QuerySplit {
    /// Query heads per KV head.
    pub group: u64,
    /// Elements from one context row of a query head to the next.
    pub c_row: u64,
}

impl KvLayout {
    /// Decode attention scores (`values = false`) or values of sequence `seq`, layer `layer`:
    /// `rows` query rows per KV head (its query heads) over the keys `keys[h]` of each head.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        accel: &Accelerator,
        comp: &Compression,
        (seq, layer): (u64, u64),
        rows: u64,
        keys: &[Vec<Range<u64>>],
        values: bool,
        at: AttentionOperands,
        op: &str,
    ) -> Result<Vec<Instruction>, LowerError> {
        self.attention_batch(accel, comp, layer, rows, keys, values, &[(seq, at)], op)
    }

    /// [`Self::attention`] of several sequences, each `(seq, operands)` over its own cache with
    /// its own operands (all with the same KV buffer): the sequences' waves stream one after
    /// another through the KV buffer's halves as one stream, so that a sequence's first waves
    /// load while the previous one's last compute.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_batch(
        &self,
        accel: &Accelerator,
        comp: &Compression,
        layer: u64,
        rows: u64,
        keys: &[Vec<Range<u64>>],
        values: bool,
        seqs: &[(u64, AttentionOperands)],
        op: &str,
    ) -> Result<Vec<Instruction>, LowerError> {
        let Some(&(_, first)) = seqs.first() else {
            return Ok(Vec::new());
        };
        let kv_buffer = first.kv_buffer;
        let err = |reason: String| LowerError {
            op: op.to_string(),
            reason,
            key: "buffers.bytes".into(),
        };
        let counts = key_counts(keys);
        let most = counts.iter().copied().max().unwrap_or(0);
        if most == 0 || rows == 0 {
            return Ok(Vec::new());
        }
        let half = accel.buffers()[kv_buffer as usize].bytes().0 / 2;
        // Integer values: int8 rows against probabilities folded with their scales (module
        // documentation).
        let fold = values && !self.fp16;
        let (weight, act_int8) = match fold {
            true => (WeightCode::Int8, kv_precision(comp).1),
            false => kv_precision(comp),
        };
        if fold {
            let act = if act_int8 {
                ActivationFormat::Int8
            } else {
                ActivationFormat::Fp16
            };
            if accel.matrix().peak_macs_per_cycle(8, act).is_none() {
                return Err(LowerError {
                    op: op.to_string(),
                    reason: format!(
                        "the values product over an integer KV cache needs 8-bit weights × {act:?} \
                         activations, which the matrix engine does not support"
                    ),
                    key: "matrix.precisions".into(),
                });
            }
        }
        let heads = keys.len() as u64;
        // Waves: for scores, ranges of keys of every head; for values, groups of `G_v` value parts
        // of every head, the heads split into sets when one group does not fit a half.
        struct Wave {
            heads: Range<u64>,
            /// Keys of each head (scores) or value parts (values).
            span: Range<u64>,
        }
        let mut waves = Vec::new();
        if values {
            let row = self.part_row * self.value_channels;
            // A head's room: its rows; integer rows with their scales and the folded
            // probabilities.
            let room = match fold {
                true => self.folded_bytes(most, rows, act_int8),
                false => most * row,
            };
            let per_set = (half / room.max(1)).min(heads);
            if per_set == 0 {
                return Err(err(format!(
                    "the values of one head ({most} keys, {room} bytes) do not fit half of the KV buffer ({half} bytes)"
                )));
            }
            for w in 0..self.parts / self.value_channels {
                let span = w * self.value_channels..(w + 1) * self.value_channels;
                for set in (0..heads).step_by(per_set as usize) {
                    waves.push(Wave {
                        heads: set..(set + per_set).min(heads),
                        span: span.clone(),
                    });
                }
            }
        } else {
            let round = self.group * self.block;
            // A key's bytes in the buffer: its row and, for integer keys, the operand's scale.
            let key_bytes = self.key_row + if self.fp16 { 0 } else { 2 };
            let cap = half / (heads * key_bytes).max(1);
            if cap == 0 {
                return Err(err(format!(
                    "one key of every head ({heads} × {key_bytes} bytes) does not fit half of the KV buffer ({half} bytes)"
                )));
            }
            let target = most.div_ceil(MIN_WAVES).next_multiple_of(round);
            let w = if target <= cap {
                target
            } else if cap >= round {
                cap / round * round
            } else {
                cap
            };
            for start in (0..most).step_by(w as usize) {
                waves.push(Wave {
                    heads: 0..heads,
                    span: start..(start + w).min(most),
                });
            }
        }
        let compute_unit = product_unit(rows);
        // Rows and result row stride of each values product of a KV head: all its rows, or
        // each query head's.
        let splits: Vec<(u64, u64)> = match seqs[0].1.split {
            Some(s) if values => {
                let group = s.group.max(1);
                (0..group).map(|_| (rows / group, s.c_row)).collect()
            }
            _ => vec![(rows, self.head_dim)],
        };
        let total = waves.len() * seqs.len();
        // The unit that runs a wave's products once its loads are in: the special-function unit
        // first when it folds the value scales into the probabilities.
        let first_unit = if fold { Unit::Sfu } else { compute_unit };
        let mut out = Vec::new();
        // Offsets of each head's scores (rows × keys, heads one after another).
        let score_at: Vec<u64> = counts
            .iter()
            .scan(0, |acc, &n| {
                let at = *acc;
                *acc += rows * n;
                Some(at)
            })
            .collect();
        let stream = seqs
            .iter()
            .flat_map(|&(seq, at)| waves.iter().map(move |wave| (seq, at, wave)));
        for (g, (seq, at, wave)) in stream.enumerate() {
            let half_addr = (g as u64 % 2) * half;
            let mut pieces = Vec::new();
            let mut products = Vec::new();
            let mut folds = Vec::new();
            let mut quantized = Vec::new();
            let mut offset = half_addr;
            // Integer values: each region holds every head of the wave one after another (so
            // that equal heads' products join into one batch): the int8 rows, their scales, the
            // folded probabilities (fp16), and those quantised for int8 activations.
            let mut folded = Folded::default();
            if fold {
                let wave_keys: u64 = wave.heads.clone().map(|h| counts[h as usize]).sum();
                folded.scales = half_addr + wave_keys * self.head_dim;
                folded.probs = folded.scales + wave_keys * self.row_scale;
                folded.quantized = folded.probs + 2 * rows * wave_keys;
            }
            for h in wave.heads.clone() {
                let (head_keys, count) = (&keys[h as usize], counts[h as usize]);
                // Query rows of the head (scores), or its probabilities (values): fp16, or for an
                // integer cache folded with the value scales (and quantised for int8
                // activations).
                let a_offset = if values {
                    score_at[h as usize] * 2
                } else {
                    let query = MatrixOp {
                        m: rows as u16,
                        k: self.head_dim as u16,
                        a_scaled: act_int8,
                        ..matrix(weight, act_int8)
                    };
                    h * matrix_product_bytes(&query).a
                };
                let probs = BufRef {
                    buffer: at.a.buffer,
                    addr: (at.a.addr as u64 + a_offset) as u32,
                };
                let a = match (fold, act_int8) {
                    (false, _) => probs,
                    (true, false) => kv_ref(at.kv_buffer, folded.probs),
                    (true, true) => kv_ref(at.kv_buffer, folded.quantized),
                };
                // A product of `m` rows at `a`: `b` at the wave's offset, results `c_offset`
                // bytes into `c`.
                let product = |(a, m): (BufRef, u64),
                               b_offset: u64,
                               c_offset: u64,
                               (n, k, c_stride): (u64, u64, u64),
                               b_rows: bool| MatrixOp {
                    a,
                    b: BufRef {
                        buffer: at.kv_buffer,
                        addr: b_offset as u32,
                    },
                    c: BufRef {
                        buffer: at.c.buffer,
                        addr: (at.c.addr as u64 + c_offset) as u32,
                    },
                    m: m as u16,
                    n: n as u16,
                    k: k as u16,
                    c_stride: c_stride as u16,
                    b_rows,
                    // Int8 queries or probabilities carry their row scales (`quantize`).
                    a_scaled: act_int8,
                    ..matrix(weight, act_int8)
                };
                if values {
                    let n = count;
                    if n == 0 {
                        continue;
                    }
                    let dims = self.part_dims() * (wave.span.end - wave.span.start);
                    let row_bytes = self.part_row * (wave.span.end - wave.span.start);
                    if fold {
                        // The head's int8 rows, which the product reads as they are, and their
                        // scales, which each query row's probabilities are multiplied by.
                        for (t0, pos0, n) in runs_between(head_keys, 0, count) {
                            let (ch, dram) = self.value(seq, layer, h, 0, pos0);
                            let buf = offset + t0 * self.head_dim;
                            pieces.push((ch, (dram, buf, n * self.part_row)));
                            let (ch, dram) = self
                                .value_scale(seq, layer, h, pos0)
                                .expect("an integer cache has row scales");
                            let buf = folded.scales + t0 * self.row_scale;
                            pieces.push((ch, (dram, buf, n * self.row_scale)));
                        }
                        // A head's query rows share its scale row (`mul_row`); one row is an
                        // element-wise `mul`, which joins with the next head's.
                        folds.push(SfuInstr::new(
                            if rows == 1 { SfuOp::Mul } else { SfuOp::MulRow },
                            (
                                probs,
                                kv_ref(at.kv_buffer, folded.scales),
                                kv_ref(at.kv_buffer, folded.probs),
                            ),
                            rows as u16,
                            count as u16,
                        ));
                        if act_int8 {
                            // Each query head's rows with their scales after them when the
                            // rows split by query head.
                            for (j, (m, _)) in splits.iter().enumerate() {
                                let j = j as u64;
                                quantized.push(SfuInstr::new(
                                    SfuOp::Quantize,
                                    (
                                        kv_ref(at.kv_buffer, folded.probs + 2 * j * m * count),
                                        kv_ref(at.kv_buffer, folded.probs),
                                        kv_ref(
                                            at.kv_buffer,
                                            folded.quantized + j * m * (count + 2),
                                        ),
                                    ),
                                    *m as u16,
                                    count as u16,
                                ));
                            }
                        }
                        folded.scales += count * self.row_scale;
                        folded.probs += 2 * rows * count;
                        folded.quantized += rows * (count + 2);
                    }
                    for part in wave.span.clone().filter(|_| !fold) {
                        let lane = (part - wave.span.start) * self.part_row;
                        for (t0, pos0, n) in runs_between(head_keys, 0, count) {
                            // A part's rows of consecutive positions are consecutive in DRAM;
                            // in the buffer too when the wave holds one part.
                            let whole = row_bytes == self.part_row;
                            let (pieces_here, rows) = if whole { (1, n) } else { (n, 1) };
                            for i in 0..pieces_here {
                                let (ch, dram) = self.value(seq, layer, h, part, pos0 + i);
                                let buf = offset + (t0 + i) * row_bytes + lane;
                                pieces.push((ch, (dram, buf, rows * self.part_row)));
                            }
                        }
                    }
                    let part_at = wave.span.start * self.part_dims();
                    for (j, &(m, c_stride)) in splits.iter().enumerate() {
                        let j = j as u64;
                        // Query head `j`'s rows: fp16 probabilities, or quantised with their
                        // scales after them.
                        let a = match (fold, act_int8) {
                            (true, true) => offset_ref(a, j * m * (count + 2)),
                            _ => offset_ref(a, 2 * j * m * count),
                        };
                        let c_offset = match at.split {
                            None => (h * rows * self.head_dim + part_at) * 2,
                            Some(s) => ((h * s.group + j) * self.head_dim + part_at) * 2,
                        };
                        let shape = (dims, n, c_stride);
                        products.push(product((a, m), offset, c_offset, shape, true));
                    }
                    offset += matrix_product_bytes(products.last().expect("pushed")).b;
                } else {
                    let range = wave.span.start.min(count)..wave.span.end.min(count);
                    if range.is_empty() {
                        continue;
                    }
                    // Integer keys' scales follow the head's rows, so that each channel's
                    // blocks of rows, and of scales, join into one looped transfer.
                    let mut scale_pieces = Vec::new();
                    for (t0, pos0, n) in runs_between(head_keys, range.start, range.end) {
                        let t0 = t0 - range.start;
                        // Consecutive keys of one block are consecutive in DRAM.
                        let mut done = 0;
                        while done < n {
                            let pos = pos0 + done;
                            let rows = (self.block - pos % self.block).min(n - done);
                            let (ch, dram) = self.key(seq, layer, h, pos);
                            let buf = offset + (t0 + done) * self.key_row;
                            pieces.push((ch, (dram, buf, rows * self.key_row)));
                            // Integer keys' scales after the wave's rows, one per column.
                            if let Some((ch, dram)) = self.key_scale(seq, layer, h, pos) {
                                let scales = offset + (range.end - range.start) * self.key_row;
                                let buf = scales + (t0 + done) * self.row_scale;
                                scale_pieces.push((ch, (dram, buf, rows * self.row_scale)));
                            }
                            done += rows;
                        }
                    }
                    pieces.extend(scale_pieces);
                    let n = range.end - range.start;
                    let c_offset = (score_at[h as usize] + range.start) * 2;
                    let shape = (n, self.head_dim, counts[h as usize]);
                    products.push(product((a, rows), offset, c_offset, shape, false));
                    // Integer keys' operand has their row scales after the values.
                    offset += matrix_product_bytes(products.last().expect("pushed")).b;
                }
            }
            let products = batched(products);
            let mut loads = by_channel(true, at.kv_buffer, pieces, self.dma_lanes);
            // Tokens as for streamed weights (`lower::lower_streamed`): the wave's first load
            // waits for the previous wave to be counted in and, from the third wave on, for the
            // compute two waves back to give the half back; the system unit counts the loads in
            // and lets the compute go.
            for (i, l) in loads.iter_mut().enumerate() {
                if let Instruction::Load(d) = l {
                    d.sync = Sync {
                        wait: match (i, g) {
                            (1.., _) | (0, 0) => UnitMask::NONE,
                            (0, 1) => UnitMask::of(&[Unit::System]),
                            (0, _) => UnitMask::of(&[Unit::System, compute_unit]),
                        },
                        release: UnitMask::of(&[Unit::System]),
                    };
                }
            }
            let count = loads.len();
            out.extend(loads);
            for i in 0..count {
                out.push(Instruction::Sys(SysInstr {
                    sync: Sync {
                        wait: UnitMask::of(&[Unit::Load]),
                        release: match (i + 1 == count, g + 1 < total) {
                            (true, true) => UnitMask::of(&[first_unit, Unit::Load]),
                            (true, false) => UnitMask::of(&[first_unit]),
                            (false, _) => UnitMask::NONE,
                        },
                    },
                    op: SysOp::Nop,
                }));
            }
            // Folding (and quantising) waits for the loads and lets the products go.
            let sfu: Vec<SfuInstr> = joined(folds).into_iter().chain(quantized).collect();
            let last = sfu.len();
            for (i, mut d) in sfu.into_iter().enumerate() {
                d.sync = Sync {
                    wait: match i {
                        0 => UnitMask::of(&[Unit::System]),
                        _ => UnitMask::NONE,
                    },
                    release: match i + 1 == last {
                        true => UnitMask::of(&[compute_unit]),
                        false => UnitMask::NONE,
                    },
                };
                out.push(Instruction::Sfu(d));
            }
            let last = products.len();
            for (i, mut p) in products.into_iter().enumerate() {
                p.sync = Sync {
                    wait: if i == 0 {
                        UnitMask::of(&[if fold { Unit::Sfu } else { Unit::System }])
                    } else {
                        UnitMask::NONE
                    },
                    release: if i + 1 == last && g + 2 < total {
                        UnitMask::of(&[Unit::Load])
                    } else {
                        UnitMask::NONE
                    },
                };
                out.push(if rows == 1 {
                    Instruction::Matvec(p)
                } else {
                    Instruction::Matmul(p)
                });
            }
        }
        Ok(out)
    }
}

/// Where the next head's integer-value operands go in the KV buffer (see [`KvLayout::attention`]).
#[derive(Debug, Clone, Copy, Default)]
struct Folded {
    /// Its value rows' fp16 scales.
    scales: u64,
    /// Its probabilities times the scales (fp16, `rows × keys`).
    probs: u64,
    /// Those quantised (int8 values, then a scale per row) for int8 activations.
    quantized: u64,
}

/// `at`, `bytes` further on.
fn offset_ref(at: BufRef, bytes: u64) -> BufRef {
    BufRef {
        buffer: at.buffer,
        addr: at.addr + bytes as u32,
    }
}

/// `addr` in `buffer`.
fn kv_ref(buffer: u8, addr: u64) -> BufRef {
    BufRef {
        buffer,
        addr: addr as u32,
    }
}

/// Element-wise special-function instructions with every run of consecutive ones of the same
/// op and width whose operands each continue the previous one's joined into one of more rows.
fn joined(sfu: Vec<SfuInstr>) -> Vec<SfuInstr> {
    let mut out: Vec<SfuInstr> = Vec::new();
    for s in sfu {
        if let Some(run) = out.last_mut() {
            let bytes = 2 * run.rows as u32 * run.cols as u32;
            let follows = |next: BufRef, first: BufRef| {
                next.buffer == first.buffer && next.addr == first.addr + bytes
            };
            if run.op == s.op
                && matches!(s.op, SfuOp::Mul | SfuOp::Add)
                && run.cols == s.cols
                && run.rows < u16::MAX - s.rows
                && follows(s.src, run.src)
                && follows(s.aux, run.aux)
                && follows(s.dst, run.dst)
            {
                run.rows += s.rows;
                continue;
            }
        }
        out.push(s);
    }
    out
}

/// `products` with every run of consecutive ones that read and write consecutive operands of the
/// same shape joined into one batched instruction.
fn batched(products: Vec<MatrixOp>) -> Vec<MatrixOp> {
    let mut out: Vec<MatrixOp> = Vec::new();
    for p in products {
        if let Some(run) = out.last_mut() {
            let one = matrix_product_bytes(run);
            let h = run.products();
            let bytes = run.out.bytes();
            let follows = |next: BufRef, first: BufRef, step: u64| {
                next.buffer == first.buffer && next.addr as u64 == first.addr as u64 + h * step
            };
            // The results' step: the run's, or from a single product the next one's offset:
            // rows after rows (`c_batch` 0), or columns beside columns within the rows.
            let row = result_row_stride(run);
            let step = match h {
                1 => (p.c.addr as u64).saturating_sub(run.c.addr as u64) / bytes,
                _ => result_batch_stride(run),
            };
            let after = step == run.m as u64 * row;
            let beside = step >= run.n as u64 && (h + 1) * step <= row && step <= u16::MAX as u64;
            let same = MatrixOp {
                a: run.a,
                b: run.b,
                c: run.c,
                meta: run.meta,
                batch: run.batch,
                c_batch: run.c_batch,
                ..p
            } == *run;
            if same
                && h < u16::MAX as u64
                && (after || beside)
                && follows(p.a, run.a, one.a)
                && follows(p.b, run.b, one.b)
                && follows(p.c, run.c, step * bytes)
            {
                run.batch = (h + 1) as u16;
                run.c_batch = if after { 0 } else { step as u16 };
                continue;
            }
        }
        out.push(p);
    }
    out
}

/// The matrix precision of products over the KV cache: its format as weights, against fp16
/// activations for an fp16 cache, else the compression's activations.
pub(crate) fn kv_precision(comp: &Compression) -> (WeightCode, bool) {
    let int8 = comp.activations == ActivationFormat::Int8;
    match comp.kv.format {
        KvFormat::Fp16 => (WeightCode::Fp16, false),
        KvFormat::Int8 => (WeightCode::Int8, int8),
        KvFormat::Int4 => (WeightCode::Int4, int8),
    }
}

/// A matrix instruction of `weight` × (int8 or fp16) activations with fp16 results and otherwise
/// default fields.
fn matrix(weight: WeightCode, act_int8: bool) -> MatrixOp {
    MatrixOp {
        weight,
        act_int8,
        sparse: SparseCode::Dense,
        out: OutCode::Fp16,
        ..MatrixOp::default()
    }
}
