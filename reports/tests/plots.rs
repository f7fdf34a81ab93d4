//! Plots are well-formed SVG carrying their series; the HTML pages embed them.

use tessera_reports::plots::{pareto, roofline, shares, timeline, Roof, RooflinePoint};
use tessera_reports::run::{html, ClassView, MachineRow, PhaseView, RunView};

/// Checks that `xml` is one well-formed element tree (tags balanced, attributes quoted).
fn assert_well_formed(xml: &str) {
    let body = xml
        .trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .trim();
    assert!(
        body.starts_with("<svg") && body.ends_with("</svg>"),
        "not an SVG document"
    );
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("unterminated tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn text_elements(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let start = t.find('>').unwrap() + 1;
            t[start..t.find("</text>").unwrap()].trim().to_string()
        })
        .collect()
}

#[test]
fn roofline_draws_each_roof_and_point() {
    let roofs = vec![
        Roof {
            name: "accel".into(),
            peak_ops: 1e13,
            bandwidth: 4e11,
        },
        Roof {
            name: "gpu".into(),
            peak_ops: 3e14,
            bandwidth: 2e12,
        },
    ];
    let points = vec![RooflinePoint {
        label: "decode: linear".into(),
        intensity: 2.0,
        ops: 8e11,
    }];
    let svg = roofline(&roofs, &points).unwrap();
    assert_well_formed(&svg);
    let texts = text_elements(&svg);
    for want in ["accel", "gpu", "decode: linear", "Roofline"] {
        assert!(
            texts.iter().any(|t| t == want),
            "missing `{want}` in {texts:?}"
        );
    }
    // One polyline per roof plus the legend's samples.
    assert!(svg.matches("<polyline").count() >= 2);
    assert_eq!(svg, roofline(&roofs, &points).unwrap(), "deterministic");
}

#[test]
fn shares_group_small_classes_and_timeline_and_pareto_are_valid() {
    let cats: Vec<String> = ["linear", "kv_read", "norm", "rotary"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let svg = shares(
        "t",
        &cats,
        &[
            ("time".into(), vec![90.0, 9.5, 0.3, 0.2]),
            ("energy".into(), vec![88.0, 11.0, 0.5, 0.5]),
        ],
    )
    .unwrap();
    assert_well_formed(&svg);
    let texts = text_elements(&svg);
    assert!(texts.iter().any(|t| t == "other (2)"), "{texts:?}");
    assert!(!texts.iter().any(|t| t == "norm"));
    let svg = timeline(
        "bw",
        "GB/s",
        1e-4,
        &[100.0, 300.0, 250.0],
        Some(("streaming", 400.0)),
    )
    .unwrap();
    assert_well_formed(&svg);
    assert!(text_elements(&svg).iter().any(|t| t == "streaming"));
    let svg = pareto("x", "y", &[(1.0, 3.0), (2.0, 2.0), (1.5, 1.0)], &[0, 1]).unwrap();
    assert_well_formed(&svg);
    assert!(text_elements(&svg).iter().any(|t| t == "Pareto front"));
}

#[test]
fn run_page_embeds_every_plot_and_the_comparison() {
    let class = |c: &str, s: f64| ClassView {
        class: c.into(),
        seconds: s,
        energy_j: s * 2.0,
        dram_bytes: 1000,
        macs: 4000,
    };
    let v = RunView {
        title: "m on a (c)".into(),
        scenario: "batch 1".into(),
        machines: vec![
            MachineRow {
                name: "a".into(),
                prefill_s: 1.0,
                decode_tokens_per_s: 100.0,
                energy_per_token_j: 0.5,
                fits: true,
                tokens_per_s_per_kusd: Some(10.0),
            },
            MachineRow {
                name: "gpu <x>".into(),
                prefill_s: 0.1,
                decode_tokens_per_s: 50.0,
                energy_per_token_j: 1.0,
                fits: true,
                tokens_per_s_per_kusd: Some(20.0),
            },
        ],
        roofs: vec![Roof {
            name: "a".into(),
            peak_ops: 1e13,
            bandwidth: 4e11,
        }],
        phases: vec![PhaseView {
            name: "decode".into(),
            fidelity: "simulation".into(),
            classes: vec![class("linear", 1.0), class("kv_read", 0.2)],
            energy_parts: vec![("dram".into(), 1.0)],
        }],
        bandwidth: Some((512, 1e-4, vec![300.0, 350.0], 400.0)),
        units: Some((
            1000,
            vec![tessera_reports::run::UnitRow {
                unit: "load".into(),
                instructions: 10,
                busy_cycles: 900,
                stall_token_cycles: 50,
                stall_resource_cycles: 0,
                stall_port_cycles: 5,
            }],
        )),
    };
    let page = html(&v).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    for id in ["roofline", "decode-classes", "bandwidth"] {
        assert!(page.contains(&format!("<figure id=\"{id}\"><svg")), "{id}");
    }
    // The accelerator's speedup over the GPU and the GPU name, escaped.
    assert!(page.contains("<td class=\"n\">2.00×</td>"), "speedup");
    assert!(page.contains("gpu &lt;x&gt;"));
    // Cost efficiency: 10 against 20 tokens/s per $1k.
    assert!(
        page.contains("<td class=\"n\">0.500×</td>"),
        "cost efficiency"
    );
    assert!(!page.contains("<script"));
    assert!(
        page.contains("<td class=\"n\">90.0%</td>"),
        "unit busy share"
    );
}
