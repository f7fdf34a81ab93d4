//! Golden models: what the generated hardware must compute, in plain integer Rust.

/// One step of a PE's input (see [`crate::pe::Pe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeStep {
    /// First step of an output item.
    pub first: bool,
    /// Last step of an output item.
    pub last: bool,
    /// First step of a quantisation group.
    pub group_first: bool,
    /// Last step of a quantisation group.
    pub group_last: bool,
    /// Use the shift-and-add datapath.
    pub shift_add: bool,
    /// `log2` of the segment length.
    pub segment_log2: u32,
    /// The 16 activations of the block.
    pub act: Vec<i8>,
    /// One weight per lane (column A of a packed step).
    pub weight: Vec<i8>,
    /// Column B's weight per lane on a packing PE, at column A's position (zero on a step that
    /// does not pack); empty on a PE that does not pack.
    pub weight_b: Vec<i8>,
    /// Each lane's activation position.
    pub index: Vec<u8>,
    /// Each segment's scale (used on a group's last step).
    pub scale: Vec<i16>,
    /// Each segment's zero point (used on a group's last step).
    pub zero: Vec<i8>,
}

const GROUP_MASK: u64 = u32::MAX as u64;
const RESULT_MASK: u64 = (1 << 48) - 1;

/// Sign-extends the low `width` bits of `v`.
pub fn sign_extend(v: u64, width: u32) -> i64 {
    ((v << (64 - width)) as i64) >> (64 - width)
}

/// The results a PE emits for a stream of steps: one vector of per-segment results (48-bit two's
/// complement, sign-extended) per item. `lanes` and `segments` are the PE's sizes. On a packing PE
/// (`pack = 2`) a step over the whole chain computes two columns: segment 0 with `weight`,
/// segment 1 with `weight_b`, both meeting the same activations (so sharing their sum).
pub fn pe_results(steps: &[PeStep], lanes: usize, segments: usize, pack: usize) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    let mut group = vec![0u64; segments];
    let mut act_sum = vec![0u64; segments];
    let mut acc = vec![0u64; segments];
    let mut item_first = false;
    for st in steps {
        let seg_len = 1usize << st.segment_log2.min(lanes.ilog2());
        item_first |= st.first;
        let packed = pack == 2 && seg_len == lanes;
        for j in 0..segments {
            let column_b = packed && j == 1;
            let lanes_of = if column_b {
                0..lanes
            } else if (j + 1) * seg_len <= lanes {
                j * seg_len..(j + 1) * seg_len
            } else {
                0..0
            };
            let weight = |l: usize| {
                if column_b {
                    st.weight_b[l] as i64
                } else {
                    st.weight[l] as i64
                }
            };
            let act = |lane: usize| st.act[st.index[lane] as usize] as i64;
            let sum: i64 = lanes_of.clone().map(|l| act(l) * weight(l)).sum();
            let asum: i64 = lanes_of.map(act).sum();
            let (base, abase) = if st.group_first {
                (0, 0)
            } else {
                (group[j], act_sum[j])
            };
            group[j] = base.wrapping_add(sum as u64) & GROUP_MASK;
            act_sum[j] = abase.wrapping_add(asum as u64) & GROUP_MASK;
        }
        if st.group_last {
            for j in 0..segments {
                let zero = st.zero[j] as i64 as u64;
                let corrected = group[j].wrapping_sub(zero.wrapping_mul(act_sum[j]));
                let scaled = sign_extend(corrected & GROUP_MASK, 32) * st.scale[j] as i64;
                let base = if item_first { 0 } else { acc[j] };
                acc[j] = base.wrapping_add(scaled as u64) & RESULT_MASK;
            }
            item_first = false;
            if st.last {
                out.push(acc.iter().map(|&a| sign_extend(a, 48)).collect());
            }
        }
    }
    out
}
