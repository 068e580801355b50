//! `explain CALL_ID --svg FILE`: a call's segment timeline as an SVG picture, in the live
//! page's colours (one bar, a time axis, a legend with each kind's total).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::escape::escape;

use crate::session::{CallRecord, SegmentKind};

const WIDTH: f64 = 960.0;
const MARGIN: f64 = 20.0;
const BAR_Y: f64 = 70.0;
const BAR_H: f64 = 36.0;
const HEIGHT: f64 = 180.0;
/// Roughly how wide one character of the 12 px labels is.
const CHAR_W: f64 = 7.0;

/// Tick spacing that gives at most a dozen ticks.
fn tick_every_ms(total_ms: i64) -> i64 {
    const STEPS_S: [i64; 13] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
    STEPS_S
        .iter()
        .map(|s| s * 1000)
        .find(|step| total_ms / step <= 12)
        .unwrap_or(7200 * 1000)
}

fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// The picture of `rec`'s timeline.
pub fn timeline_svg(rec: &CallRecord) -> String {
    let c = &rec.cdr;
    let total = c.timeline.last().map(|s| s.end_ms).unwrap_or(0).max(1);
    let span = WIDTH - 2.0 * MARGIN;
    let x = |ms: i64| MARGIN + span * ms as f64 / total as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{MARGIN}" y="26" font-size="15" font-weight="bold">call {}</text>"#,
        escape(c.id.as_str())
    );
    let answered = if c.ans == Some(1) {
        "answered"
    } else {
        "not answered"
    };
    let mut summary = format!(
        "{} \u{2192} {} · {} · {} · {} s, {answered}",
        c.cliNum,
        c.ddiNum,
        rec.kind.as_str(),
        c.start,
        c.dur
    );
    if let Some(p) = &c.partial {
        summary.push_str(&format!(" · PARTIAL: {p}"));
    }
    let _ = writeln!(
        s,
        r##"<text x="{MARGIN}" y="48" fill="#5a6b7b">{}</text>"##,
        escape(summary.as_str())
    );
    let mut totals: BTreeMap<SegmentKind, i64> = BTreeMap::new();
    for seg in &c.timeline {
        *totals.entry(seg.kind).or_default() += seg.ms();
        let (x0, x1) = (x(seg.start_ms), x(seg.end_ms));
        let label = match &seg.party {
            Some(p) => format!("{} {p}", seg.kind.as_str()),
            None => seg.kind.as_str().to_owned(),
        };
        let _ = writeln!(
            s,
            r#"<rect class="seg" data-kind="{kind}" x="{x0:.1}" y="{BAR_Y}" width="{w:.1}" height="{BAR_H}" fill="{fill}"><title>{title}</title></rect>"#,
            kind = seg.kind.as_str(),
            w = (x1 - x0).max(0.0),
            fill = seg.kind.colour(),
            title = escape(format!("{label}: {}", seconds(seg.ms())).as_str()),
        );
        if (label.chars().count() as f64) * CHAR_W + 8.0 < x1 - x0 {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#1d2733">{}</text>"##,
                x0 + 4.0,
                BAR_Y + BAR_H / 2.0 + 4.0,
                escape(label.as_str())
            );
        }
    }
    // The time axis.
    let axis_y = BAR_Y + BAR_H + 8.0;
    let _ = writeln!(
        s,
        r##"<line x1="{MARGIN}" y1="{axis_y}" x2="{:.1}" y2="{axis_y}" stroke="#8a99a8"/>"##,
        WIDTH - MARGIN
    );
    let every = tick_every_ms(total);
    let mut at = 0;
    while at <= total {
        let tx = x(at);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{axis_y}" x2="{tx:.1}" y2="{:.1}" stroke="#8a99a8"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#5a6b7b">{}</text>"##,
            axis_y + 5.0,
            axis_y + 18.0,
            seconds(at)
        );
        at += every;
    }
    // The legend: each kind the call had, with its total.
    let mut lx = MARGIN;
    let ly = HEIGHT - 22.0;
    for (kind, ms) in totals {
        let text = format!("{} {}", kind.as_str(), seconds(ms));
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="11" height="11" fill="{}"/><text x="{:.1}" y="{ly:.1}">{text}</text>"#,
            ly - 10.0,
            kind.colour(),
            lx + 15.0,
        );
        lx += 15.0 + text.len() as f64 * CHAR_W + 16.0;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Settings;
    use std::sync::Arc;

    async fn record(capture: &str, nth: usize) -> CallRecord {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/freeswitch-1.10")
            .join(capture);
        crate::replay::records(&path, Arc::new(Settings::default()))
            .await
            .unwrap()
            .swap_remove(nth)
    }

    /// Every element of the picture, read back by an XML parser (so it is well-formed).
    fn elements(svg: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut reader = quick_xml::Reader::from_str(svg);
        let mut out = Vec::new();
        loop {
            match reader.read_event().expect("well-formed SVG") {
                quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                    let attrs = e
                        .attributes()
                        .map(|a| {
                            let a = a.unwrap();
                            (
                                String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                                a.unescape_value().unwrap().into_owned(),
                            )
                        })
                        .collect();
                    out.push((
                        String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                        attrs,
                    ));
                }
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        out
    }

    #[tokio::test]
    async fn the_bar_is_the_timeline_end_to_end() {
        let rec = record("16-concurrent-mix.esl", 0).await;
        let svg = timeline_svg(&rec);
        let segs: Vec<Vec<(String, String)>> = elements(&svg)
            .into_iter()
            .filter(|(_, a)| a.iter().any(|(k, v)| k == "class" && v == "seg"))
            .map(|(_, a)| a)
            .collect();
        assert_eq!(segs.len(), rec.cdr.timeline.len());
        let num = |a: &[(String, String)], k: &str| -> f64 {
            a.iter().find(|(n, _)| n == k).unwrap().1.parse().unwrap()
        };
        // Contiguous from the left margin to the right one.
        let mut at = MARGIN;
        for (a, seg) in segs.iter().zip(&rec.cdr.timeline) {
            assert!((num(a, "x") - at).abs() < 0.2, "{svg}");
            let kind = &a.iter().find(|(n, _)| n == "data-kind").unwrap().1;
            assert_eq!(kind, seg.kind.as_str());
            at = num(a, "x") + num(a, "width");
        }
        assert!((at - (WIDTH - MARGIN)).abs() < 0.5);
        assert!(svg.contains(&rec.cdr.id));
    }

    #[tokio::test]
    async fn text_from_the_network_is_escaped() {
        let mut rec = record("01-inbound-answered.esl", 0).await;
        rec.cdr.cliNum = "<script>&\"".into();
        if let Some(seg) = rec.cdr.timeline.last_mut() {
            seg.party = Some("a<b>&c".into());
        }
        let svg = timeline_svg(&rec);
        assert!(!svg.contains("<script>"));
        assert!(!elements(&svg).is_empty());
    }

    #[test]
    fn ticks_stay_few() {
        assert_eq!(tick_every_ms(9_000), 1_000);
        assert_eq!(tick_every_ms(60_000), 5_000);
        assert_eq!(tick_every_ms(3 * 3600 * 1000), 900_000);
        assert!(tick_every_ms(100 * 3600 * 1000) >= 3600 * 1000);
    }
}
