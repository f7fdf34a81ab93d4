//! The KV cache layout: every key row and value-part row (and integer row scale) of every
//! sequence, layer and head has its own bytes, inside the cache's area at the top of its
//! channel, and a head's keys spread over all of its channels.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tessera_compiler::kv::{visible_keys, AttentionOperands, KvLayout};
use tessera_spec::accel::{Accelerator, Holds};
use tessera_spec::compression::{self, KvFormat};
use tessera_spec::isa::BufRef;
use tessera_spec::model;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn rows_never_overlap_and_stay_in_the_cache(
        model_name in prop::sample::select(vec!["tiny-llama", "gpt2", "mixtral-8x7b"]),
        accel_name in prop::sample::select(vec!["u280", "vhk158", "tiny"]),
        comp_name in prop::sample::select(vec!["w4a8-g128", "w4a8-kv4-duo"]),
        batch in 1u64..3,
        tokens in 1u64..80,
    ) {
        let mut m = model::preset(model_name).unwrap();
        // Fewer layers keep the enumeration quick; the layout treats every layer alike.
        m.layers = m.layers.min(2);
        let comp = compression::preset(comp_name).unwrap();
        let accel = Accelerator::preset(accel_name).unwrap();
        let layout = KvLayout::new(&accel, &comp, &m, batch, tokens, "test").unwrap();
        let memory = accel.memory_for(Holds::Kv).unwrap();
        let per_channel = memory.capacity().0 / memory.channels();
        let (base, area) = (layout.base(), layout.area_per_channel());
        prop_assert!(base + area <= per_channel);
        // (channel, address) → bytes, for every row placed.
        let mut rows: BTreeMap<(u8, u64), u64> = BTreeMap::new();
        let mut place = |(ch, at): (u8, u64), bytes: u64| {
            prop_assert!(at >= base && at + bytes <= base + area, "{at} outside the cache");
            prop_assert!(rows.insert((ch, at), bytes).is_none(), "two rows at {ch}:{at}");
            Ok(())
        };
        for seq in 0..batch {
            for layer in 0..m.layers as u64 {
                for head in 0..m.kv_heads as u64 {
                    for pos in 0..tokens {
                        place(layout.key(seq, layer, head, pos), layout.key_row())?;
                        for part in 0..layout.parts() {
                            place(layout.value(seq, layer, head, part, pos), layout.part_row())?;
                        }
                        // An integer cache's fp16 row scales.
                        let scales = [
                            layout.key_scale(seq, layer, head, pos),
                            layout.value_scale(seq, layer, head, pos),
                        ];
                        prop_assert_eq!(scales[0].is_some(), comp.kv.format != KvFormat::Fp16);
                        for at in scales.into_iter().flatten() {
                            place(at, 2)?;
                        }
                    }
                }
            }
        }
        // Rows in one channel do not overlap.
        let mut last: Option<(u8, u64)> = None;
        for (&(ch, at), &bytes) in &rows {
            if let Some((c, end)) = last {
                prop_assert!(c != ch || at >= end, "rows overlap at {ch}:{at}");
            }
            last = Some((ch, at + bytes));
        }
        // A head's keys use every channel the layout gives it.
        let channels: std::collections::BTreeSet<u8> =
            (0..tokens).map(|p| layout.key(0, 0, 0, p).0).collect();
        let share = (memory.channels() / m.kv_heads as u64).max(1);
        let key_bytes = comp.kv.format.row_bytes(m.head_dim);
        let blocks = tokens.div_ceil((memory.timing().row_bytes / key_bytes).max(1));
        prop_assert_eq!(channels.len() as u64, share.min(blocks));
    }
}

#[test]
fn integer_values_need_int8_weights_in_the_matrix_precisions() {
    // The u280 without int8 weights × fp16 activations: the values product over an int8 cache
    // (int8 value rows against fp16 probabilities) is refused, naming the key.
    let text = Accelerator::preset_text("u280").unwrap();
    let pair = r#"  { weight = "int8", activation = "fp16", macs_per_dsp = 0.5 },
"#;
    assert!(text.contains(pair));
    let accel = Accelerator::from_toml_str(&text.replace(pair, ""), "u280.toml").unwrap();
    let m = model::preset("tiny-llama").unwrap();
    let mut comp = compression::preset("w4a16-g128").unwrap();
    comp.kv.format = KvFormat::Int8;
    let layout = KvLayout::new(&accel, &comp, &m, 1, 64, "test").unwrap();
    let at = AttentionOperands {
        a: BufRef { buffer: 1, addr: 0 },
        c: BufRef {
            buffer: 1,
            addr: 0x1_0000,
        },
        kv_buffer: 2,
        split: None,
    };
    let keys = visible_keys(&m, &comp, 20);
    let e = layout
        .attention(
            &accel,
            &comp,
            (0, 0),
            2,
            &keys,
            true,
            at,
            "layer0.attn.values",
        )
        .unwrap_err();
    assert_eq!(e.key, "matrix.precisions");
    assert!(e.reason.contains("8-bit weights × Fp16"), "{}", e.reason);
}
